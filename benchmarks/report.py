"""The report: a table per backend, the scaling figures, and the same as JSON or Markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from benchmarks.runner import RAW, Measurement
from benchmarks.workloads import WORKLOADS

__all__ = ["BackendResult", "print_report", "to_markdown", "write_json"]

_NAMES = {workload.key: f"({workload.key}) {workload.name}" for workload in WORKLOADS}


@attrs.frozen
class BackendResult:
    """Everything measured on one backend."""

    backend: str
    executions: int
    rounds: int
    measurements: tuple[Measurement, ...]
    scaled_executions: int | None = None
    scaled: tuple[Measurement, ...] = ()

    def contenders(self) -> list[str]:
        """The contenders, in the order they were given."""
        return list(dict.fromkeys(m.contender for m in self.measurements))

    def workloads(self) -> list[str]:
        """The workload keys measured, in the report's order."""
        keys = {m.workload for m in self.measurements}
        return [workload.key for workload in WORKLOADS if workload.key in keys]

    def cell(self, workload: str, contender: str) -> Measurement:
        """The measurement of ``contender`` on ``workload``."""
        return _find(self.measurements, workload, contender)

    def scaling(self) -> list[tuple[str, str, float, float, float]]:
        """(workload, contender, rate at base, rate scaled, cost scaled / cost at base)."""
        rows = []
        for scaled in self.scaled:
            base = _find(self.measurements, scaled.workload, scaled.contender)
            rows.append(
                (scaled.workload, scaled.contender, base.rate, scaled.rate, base.rate / scaled.rate)
            )
        return rows


def _find(measurements: Sequence[Measurement], workload: str, contender: str) -> Measurement:
    for measurement in measurements:
        if (measurement.workload, measurement.contender) == (workload, contender):
            return measurement
    raise KeyError((workload, contender))


def _rate(value: float) -> str:
    return f"{value:,.0f}/s" if value >= 10 else f"{value:,.2f}/s"


def _cpu_table(result: BackendResult) -> Table:
    table = Table(title=f"{result.backend}: CPU time of this process per operation (median)")
    table.add_column("workload")
    for contender in result.contenders():
        table.add_column(contender, justify="right")
    for key in result.workloads():
        cells = [
            f"{result.cell(key, contender).cpu_per_operation:,.0f} us"
            for contender in result.contenders()
        ]
        table.add_row(_NAMES[key], *cells)
    return table


def print_report(results: Sequence[BackendResult], console: Console, *, cpu: bool = False) -> None:
    """Print one table per backend (and its CPU table), and the scaling table if any."""
    for result in results:
        table = Table(
            title=(
                f"{result.backend}: {result.executions:,} step executions, "
                f"median of {result.rounds} rounds (ratio to the raw driver)"
            )
        )
        table.add_column("workload")
        for contender in result.contenders():
            table.add_column(contender, justify="right")
        for key in result.workloads():
            cells = []
            for contender in result.contenders():
                measurement = result.cell(key, contender)
                ratio = "" if contender == RAW else f"  {measurement.ratio:.2f}x"
                cells.append(_rate(measurement.rate) + ratio)
            table.add_row(_NAMES[key], *cells)
        console.print(table)
        if cpu:
            console.print(_cpu_table(result))
        if result.scaled:
            scaling = Table(
                title=(
                    f"{result.backend}: per-operation cost at {result.scaled_executions:,} "
                    f"vs {result.executions:,} step executions"
                )
            )
            for column in ("workload", "contender", "at base", "scaled", "cost ratio"):
                scaling.add_column(column, justify="left" if column != "cost ratio" else "right")
            for key, contender, base, scaled, cost in result.scaling():
                scaling.add_row(_NAMES[key], contender, _rate(base), _rate(scaled), f"{cost:.2f}")
            console.print(scaling)


def to_markdown(results: Sequence[BackendResult]) -> str:
    """The tables as Markdown, for docs/performance.md."""
    lines: list[str] = []
    for result in results:
        contenders = result.contenders()
        lines += [
            f"**{result.backend}**, {result.executions:,} step executions, "
            f"median of {result.rounds} rounds (ops/s, and ratio to the raw driver):",
            "",
            "| workload | " + " | ".join(contenders) + " |",
            "| --- |" + " ---: |" * len(contenders),
        ]
        for key in result.workloads():
            cells = []
            for contender in contenders:
                measurement = result.cell(key, contender)
                ratio = "" if contender == RAW else f" ({measurement.ratio:.2f})"
                cells.append(_rate(measurement.rate) + ratio)
            lines.append(f"| {_NAMES[key]} | " + " | ".join(cells) + " |")
        lines.append("")
        if result.scaled:
            lines += [
                f"Per-operation cost at {result.scaled_executions:,} vs {result.executions:,} "
                f"step executions ({result.backend}):",
                "",
                "| workload | contender | at base | scaled | cost ratio |",
                "| --- | --- | ---: | ---: | ---: |",
            ]
            for key, contender, base, scaled, cost in result.scaling():
                row = (_NAMES[key], contender, _rate(base), _rate(scaled), f"{cost:.2f}")
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    return "\n".join(lines)


def _measurements(measurements: Sequence[Measurement]) -> list[dict[str, Any]]:
    return [
        {
            "workload": m.workload,
            "contender": m.contender,
            "batch": m.batch,
            "rates": list(m.rates),
            "ratios": list(m.ratios),
            "median_rate": m.rate,
            "median_ratio": m.ratio,
            "cpu_us_per_operation": list(m.cpu),
            "median_cpu_us_per_operation": m.cpu_per_operation,
        }
        for m in measurements
    ]


def write_json(path: Path, results: Sequence[BackendResult], meta: dict[str, Any]) -> None:
    """Write every measurement, round by round, with the run's settings and versions."""
    document = {
        "meta": meta,
        "backends": {
            result.backend: {
                "executions": result.executions,
                "rounds": result.rounds,
                "measurements": _measurements(result.measurements),
                "scaled_executions": result.scaled_executions,
                "scaled": _measurements(result.scaled),
            }
            for result in results
        },
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
