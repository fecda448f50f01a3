"""`ecl-db workflows list|show|delete` and `ecl-db stats` on a seeded database."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from tests.cli.helpers import Invoke, json_of, on_database
from tests.factories import ArtifactFactory, StepExecutionFactory, WorkflowFactory, sql

from ecl_persistence import Database, StepExecutionState, Workflow, WorkflowState
from ecl_persistence.cli.runtime import ExitCode

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SECRET_PAYLOAD = "payload-that-must-stay-private"


@attrs.frozen
class Seeded:
    research_done: Workflow
    translate_failed: Workflow
    research_running: Workflow


async def _seed(db: Database) -> Seeded:
    done = WorkflowFactory.build(
        definition_id="research",
        state=WorkflowState.COMPLETED,
        input={"secret": SECRET_PAYLOAD},
        created_at=T0,
        completed_at=T0 + timedelta(seconds=2),
    )
    failed = WorkflowFactory.build(
        definition_id="translate",
        state=WorkflowState.FAILED,
        error="step translate failed",
        created_at=T0 + timedelta(minutes=1),
    )
    running = WorkflowFactory.build(
        definition_id="research", created_at=T0 + timedelta(minutes=2), state="running"
    )
    steps = [
        # Out of order on purpose: the history comes back by start time.
        ("answer", 1, StepExecutionState.SUCCEEDED, 30, 7, None, 2),
        ("search", 1, StepExecutionState.FAILED, 100, 10, "search backend timed out", 0),
        ("search", 2, StepExecutionState.SUCCEEDED, 120, 20, None, 1),
    ]
    async with db.session() as uow:
        for workflow in (done, failed, running):
            await uow.workflows.create(workflow)
        await uow.step_executions.create_many(
            StepExecutionFactory.build(
                workflow_id=done.id,
                step_id=step,
                attempt=attempt,
                state=state,
                duration_ms=duration,
                tokens_used=tokens,
                error=error,
                input={"secret": SECRET_PAYLOAD},
                started_at=T0 + timedelta(seconds=offset),
                completed_at=T0 + timedelta(seconds=offset, milliseconds=duration),
            )
            for step, attempt, state, duration, tokens, error, offset in steps
        )
        await uow.step_executions.create(
            StepExecutionFactory.build(
                workflow_id=failed.id,
                step_id="translate",
                state=StepExecutionState.FAILED,
                duration_ms=5,
                tokens_used=1,
                completed_at=T0,
            )
        )
        await uow.artifacts.create(
            ArtifactFactory.build(workflow_id=done.id, step_id="answer", name="answer.md")
        )
    return Seeded(done, failed, running)


@pytest.fixture
def seeded(database_url: str) -> Seeded:
    return on_database(database_url, _seed)


def _ids(document: dict[str, object]) -> list[str]:
    items = document["items"]
    assert isinstance(items, list)
    return [item["id"] for item in items]


# --- list ------------------------------------------------------------------------------


def test_list_shows_workflows_newest_first_and_filters(ecl_db: Invoke, seeded: Seeded) -> None:
    done, failed, running = (str(w.id) for w in attrs.astuple(seeded, recurse=False))
    assert _ids(json_of(ecl_db("workflows", "list", "--json"))) == [running, failed, done]
    research = json_of(ecl_db("workflows", "list", "--definition", "research", "--json"))
    assert _ids(research) == [running, done]
    completed = json_of(ecl_db("workflows", "list", "--state", "completed", "--json"))
    assert _ids(completed) == [done]
    both = ecl_db("workflows", "list", "--state", "failed", "--definition", "research", "--json")
    assert json_of(both) == {"items": [], "next_cursor": None}


def test_list_pages_with_the_cursor_it_prints(ecl_db: Invoke, seeded: Seeded) -> None:
    first = json_of(ecl_db("workflows", "list", "--limit", "2", "--json"))
    assert _ids(first) == [str(seeded.research_running.id), str(seeded.translate_failed.id)]
    cursor = first["next_cursor"]
    assert cursor
    second = json_of(ecl_db("workflows", "list", "--limit", "2", "--cursor", cursor, "--json"))
    assert _ids(second) == [str(seeded.research_done.id)]
    assert second["next_cursor"] is None
    table = ecl_db("workflows", "list", "--limit", "2")
    assert f"More: repeat with --cursor {cursor}" in table.stdout


def test_list_table_shows_id_definition_state_and_duration(ecl_db: Invoke, seeded: Seeded) -> None:
    result = ecl_db("workflows", "list")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if str(seeded.research_done.id) in line)
    assert "research" in line
    assert "completed" in line
    assert "2024-05-01 12:00" in line
    assert "2.0 s" in line
    assert SECRET_PAYLOAD not in result.stdout


def test_list_of_an_empty_database_says_so(ecl_db: Invoke) -> None:
    result = ecl_db("workflows", "list")
    assert result.exit_code == 0
    assert result.stdout == "No workflows.\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cursor", "not-a-cursor"], "cursor"),
        (["--limit", "0"], "--limit"),
        (["--state", "paused"], "--state"),
        (["--definition", ""], "definition_id"),
    ],
)
def test_list_refuses_bad_options_with_exit_2(
    ecl_db: Invoke, seeded: Seeded, args: list[str], message: str
) -> None:
    result = ecl_db("workflows", "list", *args)
    assert result.exit_code == ExitCode.USAGE
    assert message in result.stderr
    assert "Traceback" not in result.output


# --- show ------------------------------------------------------------------------------


def test_show_json_has_every_attempt_in_order_artifacts_and_stats(
    ecl_db: Invoke, seeded: Seeded
) -> None:
    document = json_of(ecl_db("workflows", "show", str(seeded.research_done.id), "--json"))
    assert document["workflow"]["id"] == str(seeded.research_done.id)
    assert document["workflow"]["duration_ms"] == 2000
    history = [
        (e["step_id"], e["attempt"], e["state"], e["error"]) for e in document["step_executions"]
    ]
    assert history == [
        ("search", 1, "failed", "search backend timed out"),
        ("search", 2, "succeeded", None),
        ("answer", 1, "succeeded", None),
    ]
    assert [a["name"] for a in document["artifacts"]] == ["answer.md"]
    assert document["stats"] == {
        "total_executions": 3,
        "succeeded_count": 2,
        "failed_count": 1,
        "total_duration_ms": 250,
        "total_tokens": 37,
        "total_cost": None,
    }


def test_show_keeps_payloads_out_unless_asked(ecl_db: Invoke, seeded: Seeded) -> None:
    workflow_id = str(seeded.research_done.id)
    hidden = ecl_db("workflows", "show", workflow_id, "--json")
    table = ecl_db("workflows", "show", workflow_id)
    assert SECRET_PAYLOAD not in hidden.output + table.output
    assert json_of(hidden)["workflow"]["input_bytes"] > len(SECRET_PAYLOAD)
    assert "--payloads shows it" in table.stdout
    shown = json_of(ecl_db("workflows", "show", workflow_id, "--json", "--payloads"))
    assert shown["workflow"]["input"] == {"secret": SECRET_PAYLOAD}
    assert "output" not in shown["workflow"], "a workflow without output has no output key"
    assert shown["step_executions"][0]["input"] == {"secret": SECRET_PAYLOAD}
    assert SECRET_PAYLOAD in ecl_db("workflows", "show", workflow_id, "--payloads").stdout


def test_show_table_lists_attempts_errors_artifacts_and_totals(
    ecl_db: Invoke, seeded: Seeded
) -> None:
    result = ecl_db("workflows", "show", str(seeded.research_done.id))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    history = [line.split() for line in lines if line.split()[:1] in (["search"], ["answer"])]
    history = [row for row in history if row[1].isdigit()]  # not the artifacts' rows
    assert [row[:3] for row in history] == [
        ["search", "1", "failed"],
        ["search", "2", "succeeded"],
        ["answer", "1", "succeeded"],
    ]
    assert "search backend timed out" in result.stdout
    assert "answer.md" in result.stdout
    assert "3 executions: 2 succeeded, 1 failed; 250 ms, 37 tokens" in result.stdout


def test_show_of_a_workflow_without_history_says_no_artifacts(
    ecl_db: Invoke, seeded: Seeded
) -> None:
    result = ecl_db("workflows", "show", str(seeded.research_running.id))
    assert result.exit_code == 0
    assert "No artifacts." in result.stdout
    assert "0 executions" in result.stdout


def test_show_unknown_id_exits_1_and_a_malformed_id_exits_2(ecl_db: Invoke) -> None:
    unknown = str(uuid.uuid4())
    missing = ecl_db("workflows", "show", unknown)
    assert missing.exit_code == ExitCode.NO
    assert missing.stderr == f"Error: workflow {unknown} not found\n"
    malformed = ecl_db("workflows", "show", "not-an-id")
    assert malformed.exit_code == ExitCode.USAGE
    assert "'not-an-id' is not a workflow id (a UUID)" in malformed.stderr


# --- delete ----------------------------------------------------------------------------


def test_delete_with_yes_removes_the_workflow_and_its_history(
    ecl_db: Invoke, seeded: Seeded
) -> None:
    workflow_id = str(seeded.research_done.id)
    result = ecl_db("workflows", "delete", workflow_id, "--yes")
    assert result.exit_code == 0
    assert result.stdout == f"Deleted workflow {workflow_id}.\n"
    assert ecl_db("workflows", "show", workflow_id).exit_code == ExitCode.NO
    assert json_of(ecl_db("stats", "--json"))["step_executions"]["total_executions"] == 1


def test_delete_asks_first_and_keeps_the_workflow_when_declined(
    ecl_db: Invoke, seeded: Seeded
) -> None:
    workflow_id = str(seeded.translate_failed.id)
    declined = ecl_db("workflows", "delete", workflow_id, input="n\n")
    assert declined.exit_code == ExitCode.NO
    assert f"Delete failed workflow {workflow_id} (translate)?" in declined.stdout
    assert "nothing deleted" in declined.stderr
    assert ecl_db("workflows", "show", workflow_id).exit_code == 0
    accepted = ecl_db("workflows", "delete", workflow_id, input="y\n")
    assert accepted.exit_code == 0
    assert ecl_db("workflows", "show", workflow_id).exit_code == ExitCode.NO


def test_delete_of_an_unknown_id_exits_1(ecl_db: Invoke) -> None:
    unknown = str(uuid.uuid4())
    result = ecl_db("workflows", "delete", unknown, "--yes")
    assert result.exit_code == ExitCode.NO
    assert result.stderr == f"Error: workflow {unknown} not found\n"


# --- stats -----------------------------------------------------------------------------


def test_stats_counts_by_state_and_totals_executions(ecl_db: Invoke, seeded: Seeded) -> None:
    assert json_of(ecl_db("stats", "--json")) == {
        "definition_id": None,
        "workflows": {
            "pending": 0,
            "running": 1,
            "completed": 1,
            "failed": 1,
            "cancelled": 0,
            "total": 3,
        },
        "step_executions": {
            "total_executions": 4,
            "succeeded_count": 2,
            "failed_count": 2,
            "total_duration_ms": 255,
            "total_tokens": 38,
            "total_cost": None,
        },
    }
    research = json_of(ecl_db("stats", "--definition", "research", "--json"))
    assert research["definition_id"] == "research"
    assert research["workflows"]["total"] == 2
    assert research["workflows"]["failed"] == 0
    assert research["step_executions"]["total_executions"] == 3


def test_stats_table(ecl_db: Invoke, seeded: Seeded) -> None:
    result = ecl_db("stats", "--definition", "translate")
    assert result.exit_code == 0
    out = result.stdout
    assert "Workflows of definition 'translate'" in out
    workflows, executions = out.split("Step executions")
    assert re.search(r"^ *failed +1 *$", workflows, re.MULTILINE)
    assert re.search(r"^ *total +1 *$", workflows, re.MULTILINE)
    assert re.search(r"^ *failed +1 *$", executions, re.MULTILINE)
    assert re.search(r"^ *duration +5 ms *$", executions, re.MULTILINE)
    assert re.search(r"^ *tokens +1 *$", executions, re.MULTILINE)


def test_show_prints_the_history_of_state_changes_with_actor_and_reason(
    ecl_db: Invoke, database_url: str
) -> None:
    workflow = WorkflowFactory.build(created_at=T0)

    async def run(db: Database) -> None:
        async with db.session() as uow:
            await uow.workflows.create(workflow, actor="api:alice")
            await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING, actor="w-7")
            await uow.workflows.update_state(
                workflow.id, WorkflowState.FAILED, "search backend timed out", actor="w-7"
            )

    on_database(database_url, run)
    document = json_of(ecl_db("workflows", "show", str(workflow.id), "--json"))
    changes = [
        (t["from_state"], t["to_state"], t["version"], t["actor"], t["reason"])
        for t in document["transitions"]
    ]
    assert changes == [
        (None, "pending", 1, "api:alice", None),
        ("pending", "running", 2, "w-7", None),
        ("running", "failed", 3, "w-7", "search backend timed out"),
    ]
    assert document["transitions"][0]["at"] == T0.isoformat()

    table = ecl_db("workflows", "show", str(workflow.id)).stdout
    history = table.split("History")[1].split("Step executions")[0]
    rows = [line.split() for line in history.splitlines() if line.startswith(" 20")]
    assert [row[2:] for row in rows][:2] == [
        ["created", "pending", "1", "api:alice"],
        ["pending", "→", "running", "2", "w-7"],
    ]
    assert rows[0][:2] == ["2024-05-01", "12:00:00.000"]
    assert "running → failed" in history
    assert "search backend timed out" in history


def test_show_gives_the_claim_order_priority_and_run_after(
    ecl_db: Invoke, database_url: str
) -> None:
    due = T0 + timedelta(hours=1, milliseconds=250)
    workflow = Workflow.new("research", {}, run_after=due, priority=7, now=T0)
    plain = Workflow.new("research", {}, now=T0)

    async def run(db: Database) -> None:
        async with db.session() as uow:
            await uow.workflows.create(workflow)
            await uow.workflows.create(plain)

    on_database(database_url, run)
    document = json_of(ecl_db("workflows", "show", str(workflow.id), "--json"))["workflow"]
    assert (document["priority"], document["run_after"]) == (7, due.isoformat())
    other = json_of(ecl_db("workflows", "show", str(plain.id), "--json"))["workflow"]
    assert (other["priority"], other["run_after"]) == (0, None)
    table = ecl_db("workflows", "show", str(workflow.id)).stdout
    assert re.search(r"^ *priority +7 *$", table, re.MULTILINE)
    assert re.search(r"^ *run after +2024-05-01 13:00:00\.250 UTC *$", table, re.MULTILINE)


def test_show_says_when_no_state_change_was_recorded(ecl_db: Invoke, database_url: str) -> None:
    workflow = WorkflowFactory.build()

    async def run(db: Database) -> None:
        async with db.session() as uow:
            await uow.workflows.create(workflow)
            # As a workflow stored before the audit trail existed would be.
            await uow.execute(
                sql("DELETE FROM workflow_transitions WHERE workflow_id = :id", id=workflow.id),
                action="forget history",
            )

    on_database(database_url, run)
    assert "No recorded state changes." in ecl_db("workflows", "show", str(workflow.id)).stdout
    assert json_of(ecl_db("workflows", "show", str(workflow.id), "--json"))["transitions"] == []
