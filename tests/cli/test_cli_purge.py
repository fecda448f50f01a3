"""`ecl-db purge --older-than AGE [--dry-run]`: retention from the command line."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.cli.helpers import Invoke, json_of, on_database, workflow_ids
from tests.factories import WorkflowFactory, persist_step

from ecl_persistence import Database, Workflow, WorkflowState
from ecl_persistence.cli.commands.purge import parse_age
from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.domain import utc_now


def _finished(state: WorkflowState, days_ago: float) -> Workflow:
    at = utc_now() - timedelta(days=days_ago)
    return WorkflowFactory.build(state=state, created_at=at, updated_at=at, completed_at=at)


def _seed(url: str) -> list[Workflow]:
    workflows = [
        _finished(WorkflowState.COMPLETED, 45),
        _finished(WorkflowState.FAILED, 60),
        _finished(WorkflowState.COMPLETED, 2),
        WorkflowFactory.build(
            state=WorkflowState.RUNNING, created_at=utc_now() - timedelta(days=90)
        ),
    ]

    async def seed(db: Database) -> None:
        async with db.session() as uow:
            for workflow in workflows:
                await uow.workflows.create(workflow)
                await persist_step(uow, workflow)

    on_database(url, seed)
    return workflows


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), (" 90m", timedelta(minutes=90)),
     ("2w", timedelta(weeks=2)), ("45s", timedelta(seconds=45))],
)  # fmt: skip
def test_ages_parse_to_durations(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "1y", "3.5d", "30d; DROP TABLE workflows"])
def test_bad_ages_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="30d"):
        parse_age(text)


def test_purge_deletes_only_old_finished_workflows(ecl_db: Invoke, database_url: str) -> None:
    workflows = _seed(database_url)
    result = ecl_db("purge", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert "purged 2 workflows" in result.stdout
    assert workflow_ids(database_url) == {workflows[2].id, workflows[3].id}


def test_dry_run_counts_and_deletes_nothing(ecl_db: Invoke, database_url: str) -> None:
    workflows = _seed(database_url)
    document = json_of(ecl_db("purge", "--older-than", "30d", "--dry-run", "--json"))
    assert document["would_purge"] == 2
    assert document["purged"] == 0
    assert workflow_ids(database_url) == {w.id for w in workflows}


def test_purge_of_one_state_in_small_batches(ecl_db: Invoke, database_url: str) -> None:
    workflows = _seed(database_url)
    document = json_of(
        ecl_db("purge", "--older-than", "1d", "--state", "completed", "--batch-size", "1", "--json")
    )
    assert document["purged"] == 2
    assert workflow_ids(database_url) == {workflows[1].id, workflows[3].id}


def test_bad_age_is_a_usage_error(ecl_db: Invoke) -> None:
    result = ecl_db("purge", "--older-than", "soon")
    assert result.exit_code == ExitCode.USAGE
    assert "30d" in result.output
