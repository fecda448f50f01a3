"""The wheel ships the migrations: an installed package migrates SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from sqlalchemy import inspect
    import ecl_persistence
    from ecl_persistence import Database

    async def main(url):
        async with Database.from_url(url) as db:
            await db.migrate()
            async with db.engine.connect() as connection:
                def describe(sync):
                    inspector = inspect(sync)
                    tables = sorted(set(inspector.get_table_names()) - {"alembic_version"})
                    keys = sum(len(inspector.get_foreign_keys(t)) for t in tables)
                    indexes = sum(len(inspector.get_indexes(t)) for t in tables)
                    return tables, keys, indexes
                print(await connection.run_sync(describe))
        print(ecl_persistence.__file__)

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment outside the repository with the built wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    uv = shutil.which("uv")
    assert uv is not None, "uv is needed to build and install the wheel (nox installs it)"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(root / "dist"), str(REPOSITORY)],
        check=True,
        capture_output=True,
    )
    wheel = next((root / "dist").glob("ecl_persistence-*.whl"))
    subprocess.run(
        [uv, "venv", "--python", sys.executable, str(root / "venv")],
        check=True,
        capture_output=True,
    )
    python = root / "venv" / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), str(wheel)], check=True, capture_output=True
    )
    return python


def test_installed_wheel_migrates_outside_the_repository(
    installed_python: Path, empty_database_url: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(installed_python), "-c", SCRIPT, empty_database_url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    described, location = result.stdout.strip().splitlines()
    tables, foreign_keys, indexes = ast.literal_eval(described)
    assert tables == [
        "artifacts",
        "concurrency_limits",
        "payloads",
        "step_executions",
        "workflow_transitions",
        "workflows",
    ]
    assert foreign_keys == 3
    assert indexes >= 5
    assert str(REPOSITORY) not in location
    assert "site-packages" in location
