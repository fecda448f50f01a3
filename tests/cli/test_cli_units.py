"""Pieces of ``ecl-db`` without a database: the entry point, durations, the console width."""

from __future__ import annotations

import runpy
import sys

import pytest

from ecl_persistence import __version__
from ecl_persistence.cli import MISSING_EXTRA_MESSAGE, main
from ecl_persistence.cli.render import console, format_ms


def test_main_runs_the_command_and_exits_with_its_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"ecl-db, version {__version__}\n"


@pytest.mark.parametrize("module", ["click", "rich"])
def test_main_without_the_extra_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], module: str
) -> None:
    for name in [m for m in sys.modules if m.startswith("ecl_persistence.cli.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == MISSING_EXTRA_MESSAGE + "\n"


def test_main_lets_other_import_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("ecl_persistence.cli.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "alembic.script", None)
    with pytest.raises(ImportError):
        main(["current"])


@pytest.mark.parametrize(
    ("milliseconds", "text"),
    [
        (None, "-"),
        (0, "0 ms"),
        (999, "999 ms"),
        (1000, "1.0 s"),
        (59_949, "59.9 s"),
        (60_000, "1 min 00 s"),
        (3_725_000, "62 min 05 s"),
    ],
)
def test_format_ms(milliseconds: int | None, text: str) -> None:
    assert format_ms(milliseconds) == text


def test_console_is_wide_on_a_pipe_unless_columns_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert console().width == 160
    monkeypatch.setenv("COLUMNS", "72")
    assert console().width == 72


def test_python_dash_m_entry_point_runs_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["ecl-db", "--version"])
    monkeypatch.delitem(sys.modules, "ecl_persistence.__main__", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("ecl_persistence", run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"ecl-db, version {__version__}\n"
