"""Timing: every contender runs each workload in the same process, interleaved, for several rounds.

A round runs one batch of operations per contender, in an order that rotates
from round to round, so that no contender always runs first or last on a
machine whose load drifts. Each batch's arguments are made before its clock
starts. A contender's ratio to the raw driver is computed per round, from
batches that ran seconds apart, and the report gives the median over rounds.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence

import attrs

from benchmarks.contenders import Contender
from benchmarks.fixture import Fixture
from benchmarks.workloads import Workload

__all__ = ["Measurement", "Runner"]

RAW = "raw driver"
_CALIBRATION_OPS = 30
_MIN_BATCH = 20
_MAX_BATCH = 20_000


class VerificationError(AssertionError):
    """A contender returned something other than what the others return."""


@attrs.frozen
class Measurement:
    """One contender on one workload: operations per second in each round."""

    workload: str
    contender: str
    batch: int
    rates: tuple[float, ...]
    ratios: tuple[float, ...]
    """Each round's rate divided by the raw driver's rate in the same round."""
    cpu: tuple[float, ...] = ()
    """Each round's CPU time of this process per operation, in microseconds.

    It leaves out waiting (for the database server, or for a thread to be
    scheduled), so it varies less with the machine's load than the rates do.
    """

    @property
    def rate(self) -> float:
        """The median rate over rounds, in operations per second."""
        return statistics.median(self.rates)

    @property
    def ratio(self) -> float:
        """The median over rounds of the ratio to the raw driver."""
        return statistics.median(self.ratios)

    @property
    def cpu_per_operation(self) -> float:
        """The median over rounds of this process's CPU time per operation, in microseconds."""
        return statistics.median(self.cpu)


@attrs.define
class Runner:
    """Runs workloads over ``contenders``; ``advance`` is called after each timed batch."""

    contenders: Sequence[Contender]
    fixture: Fixture
    rounds: int
    seconds: float
    advance: Callable[[str], None]

    async def run(self, workload: Workload) -> list[Measurement]:
        """Verify, warm up, calibrate, then time ``rounds`` rounds of ``workload``."""
        await self._verify(workload)
        batch = workload.fixed_batch or await self._calibrate(workload)
        rates: dict[str, list[float]] = {contender.name: [] for contender in self.contenders}
        cpu: dict[str, list[float]] = {contender.name: [] for contender in self.contenders}
        for number in range(self.rounds):
            shift = number % len(self.contenders)
            for contender in [*self.contenders[shift:], *self.contenders[:shift]]:
                self.advance(f"{workload.key}: {contender.name}")
                rate, cpu_time = await self._time(workload, contender, batch)
                rates[contender.name].append(rate)
                cpu[contender.name].append(cpu_time)
        raw = rates[RAW]
        return [
            Measurement(
                workload=workload.key,
                contender=name,
                batch=batch,
                rates=tuple(values),
                ratios=tuple(value / base for value, base in zip(values, raw, strict=True)),
                cpu=tuple(cpu[name]),
            )
            for name, values in rates.items()
        ]

    async def _time(
        self, workload: Workload, contender: Contender, batch: int
    ) -> tuple[float, float]:
        """Operations per second, and CPU microseconds per operation, of one batch."""
        arguments = workload.arguments(self.fixture, batch)
        operation = workload.operation
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        for argument in arguments:
            await operation(contender, argument)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        return batch / elapsed, cpu / batch * 1e6

    async def _calibrate(self, workload: Workload) -> int:
        """Warm every contender up; size batches to last about ``seconds`` for the raw driver."""
        raw_rate = 0.0
        for contender in self.contenders:
            rate, _ = await self._time(workload, contender, _CALIBRATION_OPS)
            if contender.name == RAW:
                raw_rate = rate
        return max(_MIN_BATCH, min(_MAX_BATCH, int(self.seconds * raw_rate)))

    async def _verify(self, workload: Workload) -> None:
        """Check that every contender returns the same objects (and warm each up once)."""
        if workload.writes:
            if workload.expect is None:
                for contender in self.contenders:
                    await workload.operation(contender, workload.arguments(self.fixture, 1)[0])
                return
            for contender in self.contenders:
                argument = workload.arguments(self.fixture, 1)[0]
                result = await workload.operation(contender, argument)
                if result != workload.expect(argument, result):
                    raise VerificationError(f"{contender.name} on {workload.key}: {result!r}")
            return
        argument = workload.arguments(self.fixture, 1)[0]
        expected = await workload.operation(self.contenders[0], argument)
        for contender in self.contenders[1:]:
            result = await workload.operation(contender, argument)
            if result != expected:
                raise VerificationError(
                    f"{contender.name} on {workload.key}: {result!r} != {expected!r}"
                )
