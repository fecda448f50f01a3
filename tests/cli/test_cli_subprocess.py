"""``ecl-db`` as a real process: the console script, ``python -m``, and a missing extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecl_persistence.cli import MISSING_EXTRA_MESSAGE
from ecl_persistence.cli.runtime import ExitCode

PASSWORD = "SeCrEt"


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("ECL_DATABASE_URL", "DATABASE_URL")}
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env or {})},
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def ecl_db_script() -> str:
    """The ``ecl-db`` console script of the environment the tests run in."""
    script = Path(sys.executable).parent / "ecl-db"
    assert script.is_file(), (
        f"no ecl-db next to {sys.executable}: install the package with its extra "
        "(pip install -e '.[cli]'), as nox does"
    )
    return str(script)


def test_console_script_runs_the_demo_and_lists_it(
    ecl_db_script: str, database_url: str, tmp_path: Path
) -> None:
    demo = _run(ecl_db_script, "demo", "--database-url", database_url, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "completed" in demo.stdout
    assert "4 executions: 3 succeeded, 1 failed" in demo.stdout
    listed = _run(
        ecl_db_script,
        "workflows",
        "list",
        "--json",
        cwd=tmp_path,
        env={"ECL_DATABASE_URL": database_url},
    )
    assert listed.returncode == 0, listed.stderr
    [item] = json.loads(listed.stdout)["items"]
    assert item["state"] == "completed"


def test_python_dash_m_runs_the_command_on_the_embedded_default(tmp_path: Path) -> None:
    demo = _run(sys.executable, "-m", "ecl_persistence", "demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.startswith("Migrated sqlite:///./ecl.db to ")
    check = _run(sys.executable, "-m", "ecl_persistence", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert (tmp_path / "ecl.db").is_file()


def test_expected_failure_in_a_real_process_is_one_line_without_traceback_or_password(
    ecl_db_script: str, tmp_path: Path
) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x"
    result = _run(ecl_db_script, "demo", cwd=tmp_path, env={"ECL_DATABASE_URL": url})
    assert result.returncode == ExitCode.UNREACHABLE
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_without_the_cli_extra_the_command_says_how_to_install_it(tmp_path: Path) -> None:
    # None in sys.modules makes ``import click`` fail as if click were not installed.
    code = (
        "import runpy, sys; sys.modules['click'] = None; "
        "runpy.run_module('ecl_persistence', run_name='__main__')"
    )
    result = _run(sys.executable, "-c", code, "demo", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == MISSING_EXTRA_MESSAGE + "\n"
    assert not (tmp_path / "ecl.db").exists()


def test_importing_the_library_does_not_import_the_cli(tmp_path: Path) -> None:
    code = (
        "import sys, ecl_persistence; "
        "print(sorted(m for m in ('click', 'rich', 'ecl_persistence.cli') if m in sys.modules))"
    )
    result = _run(sys.executable, "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"
