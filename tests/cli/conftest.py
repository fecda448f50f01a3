"""Fixtures of the ``ecl-db`` tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from tests.cli.helpers import Invoke, invoke


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test runs in its own directory, with no database URL from the environment."""
    monkeypatch.chdir(tmp_path)
    for variable in ("ECL_DATABASE_URL", "DATABASE_URL", "COLUMNS"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def ecl_db(database_url: str) -> Invoke:
    """``ecl-db`` on the test's migrated, empty database (on each backend)."""

    def run(*args: str, input: str | None = None) -> Result:
        return invoke(args, url=database_url, input=input)

    return run
