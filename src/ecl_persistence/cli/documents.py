"""JSON documents of ``ecl-db``: what ``--json`` prints, for scripts.

Payloads (inputs, outputs, metadata) are the user's data and may be
sensitive: they are in a document only on request (``--payloads``);
otherwise their size in bytes stands in for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from ecl_persistence.cli.queries import Summary
from ecl_persistence.domain import (
    MISSING,
    Artifact,
    ExecutionStats,
    JsonValue,
    Missing,
    Page,
    StepExecution,
    UsageRow,
    Workflow,
    WorkflowAggregate,
    WorkflowTransition,
    encode_json,
)

__all__ = [
    "details_document",
    "echo_json",
    "ledger_row_document",
    "money",
    "ms_between",
    "page_document",
    "payload_size",
    "summary_document",
    "visible",
    "workflow_document",
]

# C0 and C1 controls, DEL, and the invisible marks that reorder or hide text
# (bidirectional overrides and isolates, zero-width characters).
_INVISIBLE = "\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff"
_HIDDEN = re.compile(f"[\x00-\x1f{_INVISIBLE}]")
_HIDDEN_IN_LINES = re.compile(f"[\x00-\x08\x0b-\x1f{_INVISIBLE}]")


def echo_json(document: Any) -> None:
    """Print ``document`` as indented JSON on standard output."""
    import click  # here: the web dashboard uses this module without the cli extra

    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, lines: bool = False) -> str:
    r"""``text`` with every control or invisible character shown as an escape (like ``\x1b``).

    Stored text (step ids, errors, actors) is anyone's: shown as it is, an
    escape sequence would drive the terminal, and a bidirectional override
    would make it read as something else. With ``lines`` (error messages),
    newlines and tabs are kept.
    """
    return (_HIDDEN_IN_LINES if lines else _HIDDEN).sub(_escape, text)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def ms_between(start: datetime, end: datetime) -> int:
    """Whole milliseconds from ``start`` to ``end``."""
    return int((end - start).total_seconds() * 1000)


def _workflow_ms(workflow: Workflow) -> int | None:
    if workflow.completed_at is None:
        return None
    return ms_between(workflow.created_at, workflow.completed_at)


def payload_size(payload: JsonValue | Missing | Mapping[str, JsonValue]) -> int | None:
    """The encoded size of a payload in bytes; ``None`` when there is none."""
    if payload is MISSING:
        return None
    return len(encode_json(payload).encode())  # type: ignore[arg-type]


def _payloads(
    document: dict[str, Any], names: Mapping[str, JsonValue | Missing], *, payloads: bool
) -> None:
    """Add each payload, or its size in bytes; an absent output is left out or null."""
    for name, value in names.items():
        if payloads:
            if value is not MISSING:
                document[name] = value
        else:
            document[f"{name}_bytes"] = payload_size(value)


# --- JSON documents ----------------------------------------------------------------


def workflow_document(workflow: Workflow, *, payloads: bool = False) -> dict[str, Any]:
    """A workflow as JSON: ids as strings, times in ISO 8601, payloads only if asked."""
    document: dict[str, Any] = {
        "id": str(workflow.id),
        "definition_id": workflow.definition_id,
        "state": workflow.state.value,
        "error": workflow.error,
        "created_at": _iso(workflow.created_at),
        "updated_at": _iso(workflow.updated_at),
        "completed_at": _iso(workflow.completed_at),
        "duration_ms": _workflow_ms(workflow),
        "version": workflow.version,
        "lease_owner": workflow.lease_owner,
        "lease_expires_at": _iso(workflow.lease_expires_at),
        "claim_count": workflow.claim_count,
        "priority": workflow.priority,
        "run_after": _iso(workflow.run_after),
        "cancel_requested_at": _iso(workflow.cancel_requested_at),
        "forked_from": None if workflow.forked_from is None else str(workflow.forked_from),
        "concurrency_key": workflow.concurrency_key,
    }
    _payloads(
        document,
        {"input": workflow.input, "output": workflow.output, "metadata": workflow.metadata},
        payloads=payloads,
    )
    return document


def _execution_document(execution: StepExecution, *, payloads: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": str(execution.id),
        "step_id": execution.step_id,
        "attempt": execution.attempt,
        "state": execution.state.value,
        "error": execution.error,
        "started_at": _iso(execution.started_at),
        "completed_at": _iso(execution.completed_at),
        "duration_ms": execution.duration_ms,
        "tokens_used": execution.tokens_used,
        "copied_from": None if execution.copied_from is None else str(execution.copied_from),
        "usage": None if execution.usage is None else attrs.asdict(execution.usage),
        "model": execution.model,
        "cost": money(execution.cost),
    }
    _payloads(
        document,
        {"input": execution.input, "output": execution.output, "metadata": execution.metadata},
        payloads=payloads,
    )
    return document


def _artifact_document(artifact: Artifact) -> dict[str, Any]:
    return {
        "id": str(artifact.id),
        "step_id": artifact.step_id,
        "name": artifact.name,
        "content_type": artifact.content_type,
        "path": artifact.path,
        "size_bytes": artifact.size_bytes,
        "created_at": _iso(artifact.created_at),
    }


def _transition_document(transition: WorkflowTransition) -> dict[str, Any]:
    return {
        "from_state": None if transition.from_state is None else transition.from_state.value,
        "to_state": transition.to_state.value,
        "at": _iso(transition.at),
        "version": transition.version,
        "actor": transition.actor,
        "reason": transition.reason,
    }


def money(amount: Decimal | None) -> str | None:
    """An amount as JSON: its exact decimal text (a JSON number would be a float), or null."""
    return None if amount is None else str(amount)


def ledger_row_document(row: UsageRow) -> dict[str, Any]:
    """A row of the usage ledger as JSON (its cost as exact text)."""
    return {
        "key": row.key,
        "attempts": row.attempts,
        "recorded": row.recorded,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cached_tokens": row.cached_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "total_tokens": row.total_tokens,
        "cost": money(row.cost),
    }


def _stats_document(stats: ExecutionStats) -> dict[str, int | str | None]:
    document: dict[str, int | str | None] = attrs.asdict(stats)
    document["total_cost"] = money(stats.total_cost)
    return document


def details_document(details: WorkflowAggregate, *, payloads: bool = False) -> dict[str, Any]:
    """A workflow with its history, every attempt of every step, its artifacts and stats."""
    return {
        "workflow": workflow_document(details.workflow, payloads=payloads),
        "transitions": [_transition_document(t) for t in details.transitions],
        "step_executions": [
            _execution_document(execution, payloads=payloads)
            for execution in details.step_executions
        ],
        "artifacts": [_artifact_document(artifact) for artifact in details.artifacts],
        "stats": _stats_document(details.stats),
    }


def page_document(page: Page[Workflow]) -> dict[str, Any]:
    """A page of workflows as JSON, with the cursor of the next page (or null)."""
    return {
        "items": [workflow_document(workflow) for workflow in page.items],
        "next_cursor": page.next_cursor,
    }


def summary_document(summary: Summary) -> dict[str, Any]:
    """Counts by state (and their total) and execution totals, as JSON."""
    workflows: dict[str, int] = {state.value: count for state, count in summary.workflows.items()}
    workflows["total"] = sum(summary.workflows.values())
    return {
        "definition_id": summary.definition_id,
        "workflows": workflows,
        "step_executions": _stats_document(summary.executions),
    }
