"""``ecl-db migrate``, ``current`` and ``check``, and the refusal of a database not migrated."""

from __future__ import annotations

import re
import sqlite3
import uuid
from pathlib import Path

import pytest
from tests.cli.helpers import Invoke, invoke, json_of

from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.migrations import head_revision

HEAD = head_revision()
SOME_ID = str(uuid.uuid4())
# Every command that reads or writes workflows needs a migrated database.
WORKFLOW_COMMANDS = {
    "list": ["workflows", "list"],
    "list-json": ["workflows", "list", "--json"],
    "show": ["workflows", "show", SOME_ID],
    "delete": ["workflows", "delete", SOME_ID, "--yes"],
    "stats": ["stats"],
}


def test_migrate_upgrades_an_empty_database_once(empty_database_url: str) -> None:
    first = invoke(["migrate"], url=empty_database_url)
    second = invoke(["migrate"], url=empty_database_url)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("Migrated ")
    assert f"from an empty schema to {HEAD}" in first.stdout
    assert second.exit_code == 0, second.output
    assert f"already at the head revision {HEAD}" in second.stdout
    assert json_of(invoke(["current", "--json"], url=empty_database_url))["at_head"] is True


def test_current_and_check_on_a_migrated_database(ecl_db: Invoke) -> None:
    current = ecl_db("current")
    assert current.exit_code == 0
    assert f"revision  {HEAD} (head)" in current.stdout
    check = ecl_db("check")
    assert check.exit_code == 0
    assert f"at the head revision {HEAD}" in check.stdout
    document = json_of(ecl_db("current", "--json"))
    assert document["revision"] == HEAD
    assert document["head"] == HEAD
    assert document["at_head"] is True
    assert json_of(ecl_db("check", "--json")) == document


def test_current_and_check_on_a_database_never_migrated(empty_database_url: str) -> None:
    current = invoke(["current"], url=empty_database_url)
    assert current.exit_code == 0
    assert f"revision  none (not the head, which is {HEAD})" in current.stdout
    check = invoke(["check"], url=empty_database_url)
    assert check.exit_code == ExitCode.NO
    assert "the database is not migrated (" in check.stderr
    assert "run `ecl-db migrate`" in check.stderr
    behind = invoke(["check", "--json"], url=empty_database_url)
    assert behind.exit_code == ExitCode.NO
    assert '"at_head": false' in behind.stdout


@pytest.mark.parametrize("command", list(WORKFLOW_COMMANDS.values()), ids=list(WORKFLOW_COMMANDS))
def test_workflow_commands_refuse_a_database_not_migrated(
    empty_database_url: str, command: list[str]
) -> None:
    result = invoke(command, url=empty_database_url)
    assert result.exit_code == ExitCode.NOT_MIGRATED
    # A SQLite file that does not exist yet is not created to find that out.
    assert re.fullmatch(
        rf"Error: the database is not migrated \((at no revision|no SQLite file yet), "
        rf"head is {HEAD}\): run `ecl-db migrate`\n",
        result.stderr,
    )
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["current"], ["check"], *WORKFLOW_COMMANDS.values()])
def test_commands_that_only_read_never_create_a_missing_sqlite_file(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "absent.db"
    result = invoke(command, url=f"sqlite:///{path}")
    assert result.exit_code in (0, ExitCode.NO, ExitCode.NOT_MIGRATED)
    assert not path.exists()
    if result.exit_code:
        assert "no SQLite file yet" in result.stderr


def test_a_revision_this_version_does_not_know_is_reported(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "newer.db"
    invoke(["migrate"], url=f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00dfeed'")
    url = f"sqlite:///{path}"
    check = invoke(["check"], url=url)
    assert check.exit_code == ExitCode.NO
    assert "revision f00dfeed, which this version of ecl-persistence does not know" in check.stderr
    for command in (["workflows", "list"], ["demo"], ["migrate"]):
        refused = invoke(command, url=url)
        assert refused.exit_code == ExitCode.NOT_MIGRATED
        assert "does not know" in refused.stderr
    assert json_of(invoke(["current", "--json"], url=url))["known"] is False
