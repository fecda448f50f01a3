"""The code in the docs runs as written: quickstart and worker on both backends, test recipe."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.factories import (
    WorkflowFactory,
    create_workflows,
    db_counts,
    stored_workflow,
    terminate_when_completed,
)

from ecl_persistence import Database, StepExecutionState, Workflow, WorkflowState

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks(page: str) -> list[str]:
    """The ```python blocks of a docs page, in order."""
    return [textwrap.dedent(block) for block in BLOCK.findall((DOCS / page).read_text())]


def test_quickstart_script_runs_on_the_database_from_the_environment(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [script] = [block for block in python_blocks("quickstart.md") if "asyncio.run(" in block]
    monkeypatch.setenv("ECL_DATABASE_URL", database_url)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    exec(compile(script, "docs/quickstart.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": completed")
    assert out[1:] == [
        "  search attempt 1: failed",
        "  search attempt 2: succeeded",
        "  2 executions, 300 tokens",
    ]
    assert not (workdir / "ecl.db").exists(), "the URL came from ECL_DATABASE_URL"


def test_concepts_page_own_models_example_commits_both(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    [script] = [block for block in python_blocks("concepts.md") if "asyncio.run(" in block]
    # A module of its own: the declarative base resolves its annotations there.
    module = types.ModuleType("docs_concepts_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(script, "docs/concepts.md", "exec"), module.__dict__)
    assert capsys.readouterr().out.splitlines() == ["True 120"]


def test_testing_page_fixture_and_test_pass_under_pytest(tmp_path: Path) -> None:
    [recipe] = [block for block in python_blocks("testing.md") if "def test_" in block]
    (tmp_path / "test_recipe.py").write_text(recipe)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_recipe.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_testing_page_bad_input_examples_raise_what_they_say() -> None:
    [snippet] = [block for block in python_blocks("testing.md") if 'float("nan")' in block]
    from ecl_persistence import SerializationError, ValidationError, Workflow

    namespace = {
        "pytest": pytest,
        "ValidationError": ValidationError,
        "SerializationError": SerializationError,
        "Workflow": Workflow,
    }
    exec(compile(snippet, "docs/testing.md", "exec"), namespace)


async def _run_block(code: str, namespace: dict[str, object]) -> None:
    """Run a snippet that awaits at its top level, as the body of a coroutine."""
    source = "async def snippet():\n" + textwrap.indent(code, "    ")
    exec(compile(source, "docs/history.md", "exec"), namespace)
    await namespace["snippet"]()  # type: ignore[operator]


async def test_history_page_snippets_record_and_read_the_audit_trail(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    change, read, purge = python_blocks("history.md")
    wf = WorkflowFactory.build(state=WorkflowState.RUNNING)
    async with db.session() as uow:
        await uow.workflows.create(wf)
        await _run_block(change, {"uow": uow, "wf": wf, "worker_id": "worker-7",
                                  "WorkflowState": WorkflowState})  # fmt: skip
    await _run_block(read, {"db": db, "workflow_id": wf.id})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["1", "None", "->", "running"],
        ["2", "running", "->", "failed"],
        ["3", "failed", "->", "running"],
    ]
    assert lines[1].endswith("worker-7 model timed out")
    assert lines[2].endswith("ops:bob resumed after the outage")

    # Nothing finished 30 days ago: the purge deletes nothing, and says so.
    namespace: dict[str, object] = {"db": db}
    await _run_block(purge + "\nprint(deleted)", namespace)
    assert capsys.readouterr().out == "0\n"


async def test_the_twenty_line_worker_of_the_docs_runs_as_written(
    database_url: str, tmp_path: Path
) -> None:
    [script] = [block for block in python_blocks("workers.md") if "asyncio.run(main())" in block]
    assert len(script.strip().splitlines()) <= 30, "the worker of the docs stays short"
    (tmp_path / "worker.py").write_text(script)
    workflows = [Workflow.new("research", {"topic": topic}) for topic in ("tides", "moons")]
    async with Database.from_url(database_url) as db:
        await create_workflows(db, *workflows, Workflow.new("other", {"topic": "none"}))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "worker.py", cwd=tmp_path,
            env={**os.environ, "ECL_DATABASE_URL": database_url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        [(_out, err)] = await terminate_when_completed(db, [process], len(workflows))
        assert process.returncode == 0, err
        for workflow in workflows:
            done = await stored_workflow(db, workflow.id)
            assert done.output == {"summary": f"3 pages about {workflow.input['topic']}"}  # type: ignore[index,call-overload]
            assert done.lease_owner is None
        assert (await db_counts(db))[WorkflowState.PENDING] == 1  # not of its definitions


async def test_the_fencing_snippet_of_the_workers_page_writes_under_the_lease(
    db: Database,
) -> None:
    [snippet] = [
        block for block in python_blocks("workers.md") if "lease = workflow.lease" in block
    ]
    workflow = Workflow.new("research", {})
    await create_workflows(db, workflow)
    namespace: dict[str, object] = {
        "db": db,
        "StepExecutionState": StepExecutionState,
        "WorkflowState": WorkflowState,
    }
    await _run_block(snippet, namespace)
    done = await stored_workflow(db, workflow.id)
    assert (done.state, done.lease_owner, done.claim_count) == (WorkflowState.COMPLETED, None, 1)
    async with db.session(read_only=True) as uow:
        (search,) = await uow.step_executions.get_for_step(workflow.id, "search")
    assert (search.state, search.output) == (StepExecutionState.SUCCEEDED, {"hits": 3})


async def test_the_claim_order_snippet_of_the_workers_page_builds_what_it_says() -> None:
    [snippet] = [block for block in python_blocks("workers.md") if "priority=10" in block]
    namespace: dict[str, object] = {"Workflow": Workflow, "datetime": datetime, "UTC": UTC}
    exec(
        compile("urgent = " + snippet.replace("\n", "\nlater = ", 1), "docs/workers.md", "exec"),
        namespace,
    )
    assert namespace["urgent"].priority == 10  # type: ignore[attr-defined]
    assert namespace["later"].run_after == datetime(2026, 12, 7, 8, tzinfo=UTC)  # type: ignore[attr-defined]


def test_the_costs_page_example_records_prices_and_reads_the_ledger() -> None:
    [script] = [block for block in python_blocks("costs.md") if "asyncio.run(main())" in block]
    namespace: dict[str, object] = {"__name__": "docs_costs"}
    exec(compile(script, "docs/costs.md", "exec"), namespace)


def test_the_fork_snippet_of_the_operations_page_runs_as_written() -> None:
    [script] = [block for block in python_blocks("operations.md") if "asyncio.run(" in block]
    exec(compile(script, "operations.md", "exec"), {"__name__": "__docs__"})
