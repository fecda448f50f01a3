"""Recording step executions around the code that runs them.

::

    recorder = StepRecorder(db)
    async with recorder.step(workflow.id, "search", {"q": "tides"}) as rec:
        rec.output = await search("tides")
        rec.tokens_used = 812

Each database write is its own short unit of work: the running attempt is
committed before the step's code starts, so a worker that dies mid-step
leaves a visible running attempt behind (which
:meth:`~ecl_persistence.repositories.WorkflowRepository.resume_point` reports
as one to retry), never a lost one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING

from ecl_persistence.domain import (
    MAX_ERROR_LENGTH,
    MISSING,
    JsonValue,
    Lease,
    Missing,
    PriceBook,
    StepExecution,
    StepExecutionState,
    StepId,
    TokenUsage,
    WorkflowId,
    check_cost,
    check_json,
    check_model,
)
from ecl_persistence.errors import DbError, ValidationError
from ecl_persistence.repositories._checks import check_count
from ecl_persistence.telemetry import observed_step

if TYPE_CHECKING:
    from ecl_persistence.database import Database

__all__ = ["StepRecorder", "StepRecording", "describe_exception"]

_log = logging.getLogger(__name__)


class StepRecording:
    """The attempt being recorded inside ``async with recorder.step(...)``.

    Set :attr:`output`, :attr:`tokens_used`, :attr:`usage`, :attr:`model`,
    :attr:`cost` and :attr:`metadata` in the block; they are stored when it
    exits (the output only when it exits cleanly: a failed attempt keeps the
    usage and cost set before it failed). Each is checked when set, so a
    value that cannot be stored fails the step at that line.
    """

    __slots__ = (
        "_cost",
        "_max_payload_bytes",
        "_metadata",
        "_model",
        "_output",
        "_tokens_used",
        "_usage",
        "execution",
    )

    def __init__(self, execution: StepExecution, max_payload_bytes: int) -> None:
        self.execution = execution
        """The attempt: running inside the block, as finished after it."""
        self._max_payload_bytes = max_payload_bytes
        self._output: JsonValue | Missing = MISSING
        self._tokens_used: int | None = None
        self._metadata: dict[str, JsonValue] | None = None
        self._usage: TokenUsage | None = None
        self._model: str | None = None
        self._cost: Decimal | None = None

    @property
    def input(self) -> JsonValue:
        """The step's input, as recorded for this attempt."""
        return self.execution.input

    @property
    def attempt(self) -> int:
        """The number of the attempt being recorded: 1 for the step's first."""
        return self.execution.attempt

    @property
    def metadata(self) -> Mapping[str, JsonValue]:
        """The attempt's metadata (read-only: assign a new mapping to replace it)."""
        current = self.execution.metadata if self._metadata is None else self._metadata
        return MappingProxyType(current)

    @metadata.setter
    def metadata(self, value: Mapping[str, JsonValue]) -> None:
        if not isinstance(value, Mapping):
            raise ValidationError("metadata must be a mapping")
        document = dict(value)
        check_json(document, field="metadata", max_bytes=self._max_payload_bytes)
        self._metadata = document

    @property
    def output(self) -> JsonValue | Missing:
        """What the step produced (``MISSING`` until set; ``None`` is JSON null)."""
        return self._output

    @output.setter
    def output(self, value: JsonValue | Missing) -> None:
        if value is not MISSING:
            check_json(value, field="output", max_bytes=self._max_payload_bytes)
        self._output = value

    @property
    def tokens_used(self) -> int | None:
        """LLM tokens the step used, or ``None`` when not counted."""
        return self._tokens_used

    @tokens_used.setter
    def tokens_used(self, value: int | None) -> None:
        self._tokens_used = check_count(value, "tokens_used")

    @property
    def usage(self) -> TokenUsage | None:
        """The tokens the step's LLM calls used, by kind (``tokens_used`` becomes their total)."""
        return self._usage

    @usage.setter
    def usage(self, value: TokenUsage | None) -> None:
        if value is not None and not isinstance(value, TokenUsage):
            raise ValidationError(f"usage must be a TokenUsage, not {type(value).__name__}")
        self._usage = value

    @property
    def model(self) -> str | None:
        """The model the step's LLM calls ran on, or ``None``."""
        return self._model

    @model.setter
    def model(self, value: str | None) -> None:
        self._model = check_model(value)

    @property
    def cost(self) -> Decimal | None:
        """What the step cost (a ``Decimal``); when None, the price book may fill it in."""
        return self._cost

    @cost.setter
    def cost(self, value: Decimal | None) -> None:
        self._cost = check_cost(value)


def describe_exception(error: BaseException) -> str:
    """The error text stored for a failed attempt: ``TypeName: message``, storable as is.

    A cancellation is ``cancelled``. The text is cut to
    :data:`~ecl_persistence.domain.MAX_ERROR_LENGTH` characters; NUL characters
    and lone surrogates, which the database would refuse, are replaced.
    """
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    message = str(error)
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    text = text.replace("\x00", "\ufffd")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:MAX_ERROR_LENGTH]


class StepRecorder:
    """Records each run of a step as an attempt, with its outcome, duration and tokens.

    Share one recorder per :class:`~ecl_persistence.Database`; it holds no
    state of its own. With a ``price_book``, an attempt that records its
    usage and model but no cost gets the cost from it (else from the
    database's price book, if any).
    """

    __slots__ = ("_db", "_price_book")

    def __init__(self, db: Database, *, price_book: PriceBook | None = None) -> None:
        self._db = db
        if price_book is not None and not isinstance(price_book, PriceBook):
            raise ValidationError("price_book must be a PriceBook")
        self._price_book = price_book

    @observed_step
    @asynccontextmanager
    async def step(
        self,
        workflow_id: WorkflowId,
        step_id: StepId | str,
        input: JsonValue,
        *,
        attempt: int | None = None,
        metadata: Mapping[str, JsonValue] | None = None,
        lease: Lease | None = None,
    ) -> AsyncIterator[StepRecording]:
        """Record one attempt of a step around the ``async with`` block.

        On entry a running attempt is stored and committed: the next attempt
        number of the step unless ``attempt`` is given. When the block exits
        cleanly the attempt succeeds, with the recording's ``output`` and
        ``tokens_used``; when it raises (or is cancelled) the attempt fails
        with :func:`describe_exception` of the exception, which then
        propagates. Either way ``duration_ms`` is the block's wall time,
        measured with a monotonic clock. Recording the end is shielded from
        cancellation.

        If the end cannot be recorded after a failure, the step's own
        exception still propagates (the attempt stays running, as after a
        crash) and a warning naming the database error is logged.

        With ``lease`` (see :class:`~ecl_persistence.Lease`) both writes are
        fenced: if the lease is no longer current, the start raises
        LeaseLostError before the block runs, and a clean end raises it
        instead of storing the output; nothing is written then.
        """
        async with self._db.session() as uow:
            execution = await uow.step_executions.start(
                workflow_id, step_id, input, attempt=attempt, metadata=metadata, lease=lease
            )
        recording = StepRecording(execution, self._db.config.max_payload_bytes)
        started = time.monotonic()
        try:
            yield recording
        except BaseException as error:
            await self._fail(execution, describe_exception(error), started, recording, lease)
            raise
        recording.execution = await asyncio.shield(
            self._finish(execution, StepExecutionState.SUCCEEDED, started, recording, lease)
        )

    async def _fail(
        self,
        execution: StepExecution,
        error: str,
        started: float,
        recording: StepRecording,
        lease: Lease | None,
    ) -> None:
        try:
            recording.execution = await asyncio.shield(
                self._finish(execution, StepExecutionState.FAILED, started, recording, lease, error)
            )
        except DbError as lost:
            # The step's own exception matters more to the caller; the attempt
            # stays running, exactly as if the worker had crashed here.
            _log.warning(
                "could not record the failure of step execution %s: %s",
                execution.id,
                type(lost).__name__,
            )

    async def _finish(
        self,
        execution: StepExecution,
        state: StepExecutionState,
        started: float,
        recording: StepRecording,
        lease: Lease | None,
        error: str | None = None,
    ) -> StepExecution:
        duration_ms = max(0, round((time.monotonic() - started) * 1000))
        succeeded = state is StepExecutionState.SUCCEEDED
        cost = recording.cost
        if cost is None and self._price_book is not None:
            cost = self._price_book.cost(recording.model, recording.usage)
        async with self._db.session() as uow:
            return await uow.step_executions.update_completion(
                execution.id,
                state,
                output=recording.output if succeeded else MISSING,
                error=error,
                duration_ms=duration_ms,
                tokens_used=recording.tokens_used,
                metadata=recording._metadata,
                lease=lease,
                usage=recording.usage,
                model=recording.model,
                cost=cost,
            )
