"""Datetimes with odd ``tzinfo`` objects: every one the API takes is refused with ValidationError.

A ``tzinfo`` is caller code. Its ``utcoffset()`` may return an offset of a
day or more, something that is not a ``timedelta``, or raise; an aware
instant may leave the range of ``datetime`` once in UTC. ``Workflow.new(now=)``
refuses all of them with ValidationError; so does every other method that
takes a datetime, before any SQL, and never with the tzinfo's own words.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from tests.factories import persist_workflow, statements_run
from tests.timezones import OddTz, RaisingTz

from ecl_persistence import Database, ValidationError, Workflow
from ecl_persistence.domain import WorkflowId
from ecl_persistence.unit_of_work import UnitOfWork

SECRET = "Odd-Tzinfo-Secret"


ODD: dict[str, datetime] = {
    "offset-of-30-hours": datetime(2024, 1, 1, tzinfo=OddTz(timedelta(hours=30))),
    "offset-that-is-an-int": datetime(2024, 1, 1, tzinfo=OddTz(3600)),
    "offset-that-is-a-string": datetime(2024, 1, 1, tzinfo=OddTz(SECRET)),
    "tzinfo-that-raises": datetime(2024, 1, 1, tzinfo=RaisingTz(SECRET)),
    "before-year-1-in-utc": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    "after-year-9999-in-utc": datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5))),
}

Call = Callable[[UnitOfWork, WorkflowId, datetime], Awaitable[object]]

CALLS: dict[str, Call] = {
    "list(created_after=)": lambda uow, wid, when: uow.workflows.list(created_after=when),
    "list(created_before=)": lambda uow, wid, when: uow.workflows.list(created_before=when),
    "claim(now=)": lambda uow, wid, when: uow.workflows.claim("w", now=when),
    "claim_by_id(now=)": lambda uow, wid, when: uow.workflows.claim_by_id(wid, "w", now=when),
    "heartbeat(now=)": lambda uow, wid, when: uow.workflows.heartbeat(wid, "w", now=when),
    "list_stale(now=)": lambda uow, wid, when: uow.workflows.list_stale(now=when),
    "release(run_after=)": lambda uow, wid, when: uow.workflows.release(wid, "w", run_after=when),
}


@pytest.mark.parametrize("when", ODD.values(), ids=ODD.keys())
def test_workflow_new_refuses_the_odd_datetimes(when: datetime) -> None:
    # The reference: what every other method must do as well.
    with pytest.raises(ValidationError) as caught:
        Workflow.new("odd", {}, now=when)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("name", "call"), CALLS.items(), ids=CALLS.keys())
async def test_every_method_taking_a_datetime_refuses_an_odd_one_before_any_sql(
    db: Database, name: str, call: Call
) -> None:
    async with db.session() as uow:
        workflow = await persist_workflow(uow)
    argument = name.partition("(")[2].rstrip("=)")
    for odd, when in ODD.items():
        with statements_run(db) as statements, pytest.raises(ValidationError) as caught:
            async with db.session() as uow:
                await call(uow, workflow.id, when)
        assert statements == [], odd
        assert argument in str(caught.value), odd
        assert SECRET not in str(caught.value)


async def test_purge_refuses_an_odd_cutoff_and_deletes_nothing(db: Database) -> None:
    async with db.session() as uow:
        await persist_workflow(uow)
    for odd, when in ODD.items():
        with statements_run(db) as statements, pytest.raises(ValidationError) as caught:
            await db.purge(finished_before=when)
        assert statements == [], odd
        assert "finished_before" in str(caught.value), odd
        assert SECRET not in str(caught.value)


async def test_an_aware_datetime_in_any_zone_still_works(db: Database) -> None:
    async with db.session() as uow:
        workflow = await persist_workflow(uow)
    east = timezone(timedelta(hours=14))
    later = (workflow.created_at + timedelta(seconds=1)).astimezone(east)
    async with db.session(read_only=True) as uow:
        page = await uow.workflows.list(created_before=later)
        assert [w.id for w in page.items] == [workflow.id]
        page = await uow.workflows.list(created_after=later.astimezone(UTC))
        assert page.items == ()
