"""The worker's wake-up: "something may be claimable now", fulfilled by polling for now.

The claim loop of a :class:`~ecl_persistence.Worker` waits on one
:class:`Wakeup` whenever it has nothing to claim, or no free slot: the wait
ends after ``poll_seconds``, or as soon as anyone calls :meth:`Wakeup.notify`
(a run that ended and freed a slot, :meth:`~ecl_persistence.Worker.stop`).
A wake-up by database notification (PostgreSQL ``LISTEN``) only has to call
:meth:`~Wakeup.notify` when a workflow becomes claimable; polling then
remains as the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Wakeup"]


class Wakeup:
    """An awaitable "look again", set by whoever knows that something changed.

    Bound to the event loop it is first awaited in; :meth:`notify` must be
    called from that loop's thread.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Something may be claimable (or a slot is free): end the current or next wait."""
        self._event.set()

    async def wait(self, seconds: float | None) -> bool:
        """Wait for :meth:`notify`, at most ``seconds`` (None: no limit).

        Returns whether it was notified; either way the next wait starts afresh.
        """
        notified = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                notified = await self._event.wait()
        self._event.clear()
        return notified
