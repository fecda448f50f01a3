"""The code in the docs runs as written: the quickstart on both backends, the test recipe."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from tests.factories import WorkflowFactory

from ecl_persistence import Database, WorkflowState

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
