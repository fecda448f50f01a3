"""``ecl-db purge`` at its edges: ages a datetime cannot hold, an age of zero, and asking first.

An age that reaches back before the year 1 is a usage error (exit 2, one
line). On a terminal ``purge`` says what it is about to delete and asks, as
``workflows delete`` does; ``--yes`` skips the question. Off a terminal it
does not ask, but an age of zero, which deletes every finished workflow,
needs ``--yes``.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from datetime import timedelta

import attrs
import pytest
from tests.cli.helpers import invoke, on_database, workflow_ids
from tests.factories import REPOSITORY, WorkflowFactory
from tests.reliability._support import poison_deletes

from ecl_persistence import Database, Workflow, WorkflowState
from ecl_persistence.cli.commands import purge as purge_command
from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.domain import utc_now

PROMPT_WAIT_SECS = 60.0


def _finished(days_ago: float) -> Workflow:
    at = utc_now() - timedelta(days=days_ago)
    return WorkflowFactory.build(
        state=WorkflowState.COMPLETED, created_at=at, updated_at=at, completed_at=at
    )


def _seed(url: str) -> dict[str, Workflow]:
    workflows = {
        "old": _finished(60),
        "older": _finished(90),
        "recent": _finished(0.001),
        "running": WorkflowFactory.build(state=WorkflowState.RUNNING),
    }

    async def seed(db: Database) -> None:
        async with db.session() as uow:
            for workflow in workflows.values():
                await uow.workflows.create(workflow)

    on_database(url, seed)
    return workflows


def _names(workflows: dict[str, Workflow], *names: str) -> set[object]:
    return {workflows[name].id for name in names}


@pytest.mark.parametrize("age", ["999999w", "999999d", "106000w"])
def test_an_age_no_datetime_can_hold_is_a_usage_error_in_one_line(
    database_url: str, age: str
) -> None:
    workflows = _seed(database_url)
    result = invoke(["purge", "--older-than", age], url=database_url)
    assert result.exit_code == ExitCode.USAGE
    # Click's usage line and hint, then the one line that says what is wrong.
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "year 1" in error
    assert "Traceback" not in result.output
    assert workflow_ids(database_url) == _names(workflows, *workflows)


def test_the_longest_age_a_datetime_holds_is_accepted(database_url: str) -> None:
    workflows = _seed(database_url)
    result = invoke(["purge", "--older-than", "105000w"], url=database_url)
    assert result.exit_code == 0, result.output
    assert "purged 0 workflows" in result.stdout
    assert workflow_ids(database_url) == _names(workflows, *workflows)


def test_an_age_of_zero_off_a_terminal_needs_yes(database_url: str) -> None:
    workflows = _seed(database_url)
    refused = invoke(["purge", "--older-than", "0d"], url=database_url)
    assert refused.exit_code == ExitCode.USAGE
    assert "every finished workflow" in refused.stderr
    assert "--yes" in refused.stderr
    assert workflow_ids(database_url) == _names(workflows, *workflows)
    counted = invoke(["purge", "--older-than", "0s", "--dry-run"], url=database_url)
    assert counted.exit_code == 0, counted.output
    assert "would purge 3 workflows" in counted.stdout
    confirmed = invoke(["purge", "--older-than", "0h", "--yes"], url=database_url)
    assert confirmed.exit_code == 0, confirmed.output
    assert workflow_ids(database_url) == _names(workflows, "running")


@pytest.mark.parametrize(("answer", "left"), [("n", ("old", "older", "recent", "running")),
                                              ("y", ("recent", "running"))])  # fmt: skip
def test_on_a_terminal_purge_says_what_it_will_delete_and_asks(
    database_url: str, monkeypatch: pytest.MonkeyPatch, answer: str, left: tuple[str, ...]
) -> None:
    workflows = _seed(database_url)
    monkeypatch.setattr(purge_command, "_on_a_terminal", lambda: True)
    result = invoke(["purge", "--older-than", "30d"], url=database_url, input=f"{answer}\n")
    assert "Purge 2 completed, failed and cancelled workflows finished before" in result.stderr
    assert "[y/N]" in result.stderr
    assert result.exit_code == (0 if answer == "y" else ExitCode.NO), result.output
    assert workflow_ids(database_url) == _names(workflows, *left)
    # --yes does not ask.
    assert invoke(["purge", "--older-than", "1d", "--yes"], url=database_url).exit_code == 0


def test_on_a_terminal_an_age_of_zero_asks_about_every_finished_workflow(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflows = _seed(database_url)
    monkeypatch.setattr(purge_command, "_on_a_terminal", lambda: True)
    result = invoke(["purge", "--older-than", "0d"], url=database_url, input="n\n")
    assert "Purge all 3 completed, failed and cancelled workflows, however recent" in result.stderr
    assert result.exit_code == ExitCode.NO
    assert workflow_ids(database_url) == _names(workflows, *workflows)


def _run_on_a_terminal(url: str, *args: str, answer: bytes) -> tuple[int, str]:
    """Run ``ecl-db ARGS`` with a pseudo-terminal as its stdin, stdout and stderr; answer once."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "ecl_persistence", "--database-url", url, *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=REPOSITORY,
        close_fds=True,
    )
    os.close(terminal)
    seen = b""
    answered = False
    deadline = time.monotonic() + PROMPT_WAIT_SECS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the terminal closed: the process ended
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(controller, answer + b"\n")
                answered = True
            if process.poll() is not None and not ready:
                break
        code = process.wait(timeout=PROMPT_WAIT_SECS)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    return code, seen.decode(errors="replace")


def test_purge_asks_on_a_real_terminal(database_url: str) -> None:
    workflows = _seed(database_url)
    code, seen = _run_on_a_terminal(database_url, "purge", "--older-than", "30d", answer=b"n")
    assert "Purge 2 completed, failed and cancelled workflows" in seen
    assert code == ExitCode.NO, seen
    assert "nothing purged" in seen
    assert workflow_ids(database_url) == _names(workflows, *workflows)


def test_a_purge_that_fails_part_way_says_how_many_it_purged(empty_database_url: str) -> None:
    async def prepare(db: Database) -> None:
        await db.migrate()
        async with db.session() as uow:
            await uow.workflows.create(_finished(90))
            await uow.workflows.create(attrs.evolve(_finished(60), definition_id="poison"))
        await poison_deletes(db)

    on_database(empty_database_url, prepare)
    result = invoke(["purge", "--older-than", "30d", "--batch-size", "1"], url=empty_database_url)
    assert result.exit_code == ExitCode.DATABASE_ERROR
    (error,) = result.stderr.strip().splitlines()
    assert "purge stopped after deleting 1 workflow:" in error
