"""What each page and its ``/api`` twin read: one read-only unit of work per request."""

from __future__ import annotations

from typing import Any

import attrs

from ecl_persistence.cli.documents import (
    details_document,
    ledger_row_document,
    money,
    page_document,
)
from ecl_persistence.cli.queries import page_of
from ecl_persistence.database import Database
from ecl_persistence.domain import (
    Page,
    UsageRow,
    Workflow,
    WorkflowAggregate,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.web.filters import ListFilters, UsageWindow
from ecl_persistence.web.usage import UsageReport, usage_report

__all__ = [
    "Listing",
    "details_json",
    "listing_json",
    "load_cost_by_model",
    "load_listing",
    "load_usage",
    "load_workflow",
    "usage_json",
]


@attrs.frozen
class Listing:
    """A page of the workflow list and the counts by state (of the definition, if filtered)."""

    filters: ListFilters
    page: Page[Workflow]
    counts: dict[WorkflowState, int]


async def load_listing(db: Database, filters: ListFilters) -> Listing:
    """The page the filters ask for and the counts by state, in one read-only unit."""
    async with db.session(read_only=True) as uow:
        page = await page_of(
            uow,
            state=filters.state,
            definition_id=filters.definition_id,
            since=filters.since,
            until=filters.until,
            limit=filters.limit,
            cursor=filters.cursor,
        )
        counts = await uow.workflows.count_by_state(filters.definition_id)
    return Listing(filters, page, counts)


async def load_workflow(db: Database, workflow_id: WorkflowId) -> WorkflowAggregate | None:
    """The workflow with its attempts, artifacts and audit trail (``None`` if unknown)."""
    async with db.session(read_only=True) as uow:
        return await uow.workflows.load(workflow_id)


async def load_usage(db: Database, window: UsageWindow) -> UsageReport:
    """Tokens and attempts of the window by definition and by day."""
    async with db.session(read_only=True) as uow:
        return await usage_report(uow, window.since, window.until)


async def load_cost_by_model(db: Database, workflow_id: WorkflowId) -> list[UsageRow]:
    """The ledger of one workflow, by model."""
    async with db.session(read_only=True) as uow:
        return await uow.step_executions.usage(workflow_id=workflow_id, group_by="model")


def listing_json(listing: Listing) -> dict[str, Any]:
    """``/api/workflows``: the page as ``ecl-db workflows list --json`` has it, and the counts."""
    document = page_document(listing.page)
    document["counts"] = {state.value: count for state, count in listing.counts.items()}
    return document


def details_json(details: WorkflowAggregate, *, payloads: bool) -> dict[str, Any]:
    """``/api/workflows/ID``: as ``ecl-db workflows show --json`` prints it."""
    return details_document(details, payloads=payloads)


def usage_json(report: UsageReport) -> dict[str, Any]:
    """``/api/usage``: tokens and attempts by definition and by day; model and cost when known."""
    return {
        "since": report.since.isoformat(),
        "until": report.until.isoformat(),
        "total_tokens": report.total_tokens,
        "total_attempts": report.total_attempts,
        "by_definition": [attrs.asdict(usage) for usage in report.by_definition],
        "by_day": [
            {"day": day.day.date().isoformat(), "attempts": day.attempts, "tokens": day.tokens}
            for day in report.by_day
        ],
        "by_model": None
        if report.by_model is None
        else [ledger_row_document(row) for row in report.by_model],
        "cost": money(report.cost),
    }
