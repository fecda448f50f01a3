"""The worker's wake-up: "something may be claimable now", by notification and by polling.

The claim loop of a :class:`~ecl_persistence.Worker` waits on one
:class:`Wakeup` whenever it has nothing to claim, or no free slot: the wait
ends after ``poll_seconds``, or as soon as anyone calls :meth:`Wakeup.notify`
(a run that ended and freed a slot, :meth:`~ecl_persistence.Worker.stop`,
or the :class:`Listener`, on a database notification that a workflow of
the worker's definitions became claimable: PostgreSQL's ``LISTEN``).
Polling remains the fallback: it finds the expired leases and the
``run_after`` that came due, which no write announces, and whatever was
announced while the listener was reconnecting (after each connect the
listener wakes the worker once, so a missed notification costs at most
that one claim).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ecl_persistence.database import Database

__all__ = ["Listener", "Wakeup"]

_log = logging.getLogger("ecl_persistence.workers")
# How often an idle listener connection must answer a SELECT 1: a link cut
# without a reset is found within this time.
_CHECK_SECONDS = 30.0
_RETRY_MIN_SECONDS = 0.1
_RETRY_MAX_SECONDS = 5.0


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


class Listener:
    """Keeps one connection listening for "claimable" notifications; wakes a :class:`Wakeup`.

    Where the database has no notifications (SQLite), or none reach this
    configuration (``pgbouncer=True`` without ``listen_url``), it does
    nothing and the worker polls. A connection lost (or not answering within
    30 s) is opened again, after 0.1 s, then doubling up to 5 s between
    attempts. Notifications for definitions outside ``definitions`` (None:
    all) are ignored.
    """

    __slots__ = ("_db", "_definitions", "_listening", "_name", "_task", "_wakeup")

    def __init__(
        self, db: Database, wakeup: Wakeup, definitions: tuple[str, ...] | None, name: str
    ) -> None:
        self._db = db
        self._wakeup = wakeup
        self._definitions = None if definitions is None else frozenset(definitions)
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._listening = False

    @property
    def listening(self) -> bool:
        """Whether a listening connection is open now."""
        return self._listening

    def start(self) -> None:
        """Start listening in a task of the running loop (nothing if started already)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"listen {self._name}"
            )

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_notice(self, definition_id: str) -> None:
        if self._definitions is None or definition_id in self._definitions:
            self._wakeup.notify()

    async def _run(self) -> None:
        config = self._db.config
        delay = _RETRY_MIN_SECONDS
        while True:
            try:
                listening = await config.strategy.listen(config, self._on_notice)
            except Exception as error:  # a server down, a wrong listen_url: poll meanwhile
                _log.warning(
                    "worker %s cannot listen for notifications (%s); polling, retry in %g s",
                    self._name, type(error).__name__, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_SECONDS)
                continue
            if listening is None:
                return
            self._listening = True
            delay = _RETRY_MIN_SECONDS
            # Whatever was announced before LISTEN took effect: look once.
            self._wakeup.notify()
            try:
                await listening.wait_lost(_CHECK_SECONDS)
            finally:
                self._listening = False
                await asyncio.shield(listening.close())
            _log.warning("worker %s lost its listener connection; reconnecting", self._name)
            await asyncio.sleep(delay)
