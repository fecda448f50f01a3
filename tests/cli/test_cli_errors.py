"""Expected failures of ``ecl-db``: one line on stderr, a documented exit code, no password."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.cli.helpers import invoke, json_of
from tests.conftest import admin_postgres_url

from ecl_persistence import __version__
from ecl_persistence.cli.app import cli
from ecl_persistence.cli.runtime import ExitCode

PASSWORD = "SeCrEt"
UNREACHABLE = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x"
UNPARSABLE = f"postgresql://u:{PASSWORD}@h:notaport/db"
SOME_ID = str(uuid.uuid4())
EVERY_COMMAND = {
    "migrate": ["migrate"],
    "current": ["current"],
    "current-json": ["current", "--json"],
    "check": ["check"],
    "demo": ["demo"],
    "list": ["workflows", "list"],
    "show": ["workflows", "show", SOME_ID],
    "delete": ["workflows", "delete", SOME_ID, "--yes"],
    "stats": ["stats", "--json"],
}
COMMANDS = pytest.mark.parametrize("command", list(EVERY_COMMAND.values()), ids=list(EVERY_COMMAND))


def _one_line_error(output: str) -> str:
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: ")
    return lines[0]


@COMMANDS
def test_unreachable_database_exits_3_without_showing_the_password(command: list[str]) -> None:
    result = invoke(command, url=UNREACHABLE)
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert "cannot reach the" in _one_line_error(result.stderr)
    assert PASSWORD not in result.output
    assert result.stdout == ""


@COMMANDS
def test_unparsable_url_exits_2_without_showing_the_password(command: list[str]) -> None:
    result = invoke(command, url=UNPARSABLE)
    assert result.exit_code == ExitCode.USAGE
    line = _one_line_error(result.stderr)
    assert line == "Error: database URL with scheme 'postgresql' could not be parsed"
    assert PASSWORD not in result.output


@COMMANDS
def test_unsupported_scheme_exits_2_naming_it(command: list[str]) -> None:
    result = invoke(command, url="mysql://root@localhost/ecl")
    assert result.exit_code == ExitCode.USAGE
    assert "unsupported database URL scheme 'mysql'" in _one_line_error(result.stderr)


def test_sqlite_file_in_a_missing_directory_exits_3(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'ecl.db'}"
    for command in (["migrate"], ["demo"]):
        result = invoke(command, url=url)
        assert result.exit_code == ExitCode.UNREACHABLE
        assert "its directory does not exist" in _one_line_error(result.stderr)
    assert not (tmp_path / "no").exists()


@pytest.mark.postgresql
def test_missing_postgresql_database_exits_3_naming_the_problem() -> None:
    url = admin_postgres_url().rsplit("/", 1)[0] + f"/ecl_absent_{uuid.uuid4().hex[:8]}"
    result = invoke(["current"], url=url)
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "database does not exist" in _one_line_error(result.stderr)


def test_database_url_comes_from_the_option_else_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = tmp_path / "from-env.db"
    from_option = tmp_path / "from-option.db"
    monkeypatch.setenv("ECL_DATABASE_URL", f"sqlite:///{from_env}")
    assert invoke(["migrate"]).exit_code == 0
    assert from_env.exists()
    assert not (tmp_path / "ecl.db").exists()
    # The option wins, even over a variable that would not parse.
    monkeypatch.setenv("ECL_DATABASE_URL", UNPARSABLE)
    assert invoke(["migrate", "--database-url", f"sqlite:///{from_option}"]).exit_code == 0
    assert from_option.exists()
    monkeypatch.delenv("ECL_DATABASE_URL")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{from_option}")
    assert json_of(invoke(["current", "--json"]))["database"] == f"sqlite:///{from_option}"


def test_database_url_may_follow_the_command_and_the_nearest_wins(tmp_path: Path) -> None:
    near = tmp_path / "near.db"
    result = invoke(["migrate", "--database-url", f"sqlite:///{near}"], url=UNPARSABLE)
    assert result.exit_code == 0, result.output
    assert near.exists()
    listed = invoke(["workflows", "--database-url", f"sqlite:///{near}", "list", "--json"])
    assert json_of(listed) == {"items": [], "next_cursor": None}


def test_a_password_in_the_environment_is_masked_in_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ECL_DATABASE_URL", UNREACHABLE)
    result = invoke(["current"])
    assert result.exit_code == ExitCode.UNREACHABLE
    assert PASSWORD not in result.output


def test_a_bad_setting_in_the_environment_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECL_DB_TIMEOUT_SECS", "soon")
    result = invoke(["current"])
    assert result.exit_code == ExitCode.USAGE
    assert "ECL_DB_TIMEOUT_SECS" in _one_line_error(result.stderr)


def test_unknown_command_exits_2_and_help_lists_the_exit_codes() -> None:
    assert invoke(["frobnicate"]).exit_code == ExitCode.USAGE
    help_text = invoke(["--help"]).stdout
    for command in ("migrate", "current", "check", "demo", "workflows", "stats"):
        assert command in help_text
    assert "4 database not migrated" in help_text
    assert invoke(["--version"]).stdout == f"ecl-db, version {__version__}\n"


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for command in (["migrate"], ["demo"], ["workflows", "list"], ["workflows", "show"]):
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0
        assert "--database-url" in result.stdout


def test_a_corrupt_row_is_a_database_error_exit_5(tmp_path: Path) -> None:
    """SQLite only: PostgreSQL's jsonb cannot hold malformed JSON."""
    path = tmp_path / "corrupt.db"
    url = f"sqlite:///{path}"
    workflow_id = json_of(invoke(["demo", "--json"], url=url))["workflow"]["id"]
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE workflows SET input = '{bad'")
    result = invoke(["workflows", "show", workflow_id], url=url)
    assert result.exit_code == ExitCode.DATABASE_ERROR
    assert "workflows.input" in _one_line_error(result.stderr)
    assert "JSON that cannot be read back" in result.stderr
