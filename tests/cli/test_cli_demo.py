"""``ecl-db demo``: a real workflow, one step retried, stored and printed; on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.helpers import Invoke, invoke, json_of

from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.migrations import head_revision

EXPECTED_HISTORY = [
    ("gather", 1, "succeeded"),
    ("summarise", 1, "failed"),
    ("summarise", 2, "succeeded"),
    ("publish", 1, "succeeded"),
]


def _history(document: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(e["step_id"], e["attempt"], e["state"]) for e in document["step_executions"]]


def test_demo_stores_every_attempt_an_artifact_output_and_final_state(
    ecl_db: Invoke, tmp_path: Path
) -> None:
    document = json_of(ecl_db("demo", "--json", "--artifacts-dir", str(tmp_path / "out")))
    workflow = document["workflow"]
    assert workflow["definition_id"] == "ecl-demo"
    assert workflow["state"] == "completed"
    assert workflow["completed_at"] is not None
    assert workflow["output_bytes"] > 0
    # Claimed once, and completing it ended the lease.
    assert (workflow["claim_count"], workflow["lease_owner"]) == (1, None)
    assert _history(document) == EXPECTED_HISTORY
    # Every state change of the demo is signed by its worker in the audit trail.
    actors = {transition["actor"] for transition in document["transitions"]}
    assert len(actors) == 1
    assert actors.pop().startswith("demo-")
    executions = document["step_executions"]
    assert all(e["duration_ms"] is not None and e["tokens_used"] is not None for e in executions)
    assert all(e["completed_at"] is not None for e in executions)
    assert "timed out" in executions[1]["error"]
    assert [e["error"] for e in executions if e is not executions[1]] == [None, None, None]
    [artifact] = document["artifacts"]
    assert artifact["path"] == f"artifacts/{workflow['id']}/summary.md"
    written = tmp_path / "out" / artifact["path"]
    assert written.read_text(encoding="utf-8").startswith("# Tides")
    assert written.stat().st_size == artifact["size_bytes"]
    stats = document["stats"]
    assert (stats["total_executions"], stats["succeeded_count"], stats["failed_count"]) == (4, 3, 1)
    assert stats["total_tokens"] == sum(e["tokens_used"] for e in executions)
    assert stats["total_duration_ms"] == sum(e["duration_ms"] for e in executions)


def test_demo_run_twice_gives_two_workflows(ecl_db: Invoke) -> None:
    first = json_of(ecl_db("demo", "--json"))["workflow"]["id"]
    second = json_of(ecl_db("demo", "--json"))["workflow"]["id"]
    listed = json_of(ecl_db("workflows", "list", "--json"))["items"]
    assert first != second
    assert [item["id"] for item in listed] == [second, first]


def test_demo_prints_the_history_table_and_stats(ecl_db: Invoke) -> None:
    result = ecl_db("demo")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "completed" in out
    for step in ("gather", "summarise", "publish"):
        assert step in out
    assert "model timed out" in out
    assert "summary.md" in out
    assert "4 executions: 3 succeeded, 1 failed" in out
    assert "ecl-db workflows show" in out
    assert "Migrated" not in out, "the database was already at head"


def test_demo_migrates_an_empty_database_first(empty_database_url: str) -> None:
    result = invoke(["demo"], url=empty_database_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Migrated ")
    assert f"to {head_revision()}" in result.stdout.splitlines()[0]
    assert invoke(["check"], url=empty_database_url).exit_code == 0


def test_demo_writes_the_artifact_next_to_the_sqlite_file_by_default(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    document = json_of(invoke(["demo", "--json"], url=f"sqlite:///{folder / 'ecl.db'}"))
    assert (folder / document["artifacts"][0]["path"]).is_file()


def test_demo_with_the_embedded_default_creates_ecl_db_in_the_working_directory(
    tmp_path: Path,
) -> None:
    result = invoke(["demo"])
    assert result.exit_code == 0, result.output
    assert "sqlite:///./ecl.db" in result.stdout
    assert (tmp_path / "ecl.db").is_file()
    assert next((tmp_path / "artifacts").glob("*/summary.md")).is_file()


def test_demo_step_failing_every_attempt_fails_the_workflow(ecl_db: Invoke, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("in the way")
    result = ecl_db("demo", "--artifacts-dir", str(blocker / "inside"))
    assert result.exit_code == ExitCode.DATABASE_ERROR
    assert "step publish failed 3 times" in result.stderr
    assert "Traceback" not in result.output
    [item] = json_of(ecl_db("workflows", "list", "--json"))["items"]
    assert item["state"] == "failed"
    assert item["error"] == "step publish failed 3 times"
    document = json_of(ecl_db("workflows", "show", item["id"], "--json"))
    assert _history(document)[-3:] == [("publish", n, "failed") for n in (1, 2, 3)]
    assert document["artifacts"] == []
