"""`ecl-db serve`: where it may listen, what it checks first, and a newcomer's first look."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.cli.helpers import Invoke, invoke
from tests.factories import REPOSITORY

from ecl_persistence import web
from ecl_persistence.cli.commands.serve import MISSING_WEB_EXTRA
from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.web import server

TOKEN = "sixteen-chars-at-least"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record what `serve` would run instead of running it."""
    calls: list[dict[str, Any]] = []

    def record(sock: Any, config: Any, **options: Any) -> None:
        calls.append({"address": sock.getsockname(), "url": config.url, **options})
        sock.close()

    monkeypatch.setattr(server, "serve_on", record)
    return calls


def test_serve_listens_on_loopback_by_default(
    ecl_db: Invoke, served: list[dict[str, Any]], database_url: str
) -> None:
    result = ecl_db("serve", "--port", "0")
    assert result.exit_code == 0, result.output
    (call,) = served
    host, port = call["address"]
    assert host == "127.0.0.1"
    assert f"read-only on http://127.0.0.1:{port}/ (no token;" in result.stdout
    assert (call["payloads"], call["token"], call["insecure_no_auth"]) == (False, None, False)
    assert call["url"] == database_url


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "reachable from other machines: give --token"),
        (["--host", "::"], "reachable from other machines"),
        (["--token", "short"], "at least 16 characters"),
        (["--token", TOKEN, "--insecure-no-auth"], "exclude each other"),
    ],
)
def test_serve_refuses_to_expose_the_data_without_a_token(
    ecl_db: Invoke, served: list[dict[str, Any]], args: list[str], message: str
) -> None:
    result = ecl_db("serve", "--port", "0", *args)
    assert result.exit_code == ExitCode.USAGE
    assert message in result.stderr
    assert served == []


def test_serve_beyond_loopback_with_a_token_from_the_environment(
    ecl_db: Invoke, served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECL_DB_SERVE_TOKEN", TOKEN)
    result = ecl_db("serve", "--host", "0.0.0.0", "--port", "0", "--payloads")
    assert result.exit_code == 0, result.output
    assert "(token required;" in result.stdout
    assert TOKEN not in result.output
    assert (served[0]["token"], served[0]["payloads"]) == (TOKEN, True)


def test_serve_insecure_no_auth_is_an_explicit_choice(
    ecl_db: Invoke, served: list[dict[str, Any]]
) -> None:
    assert ecl_db("serve", "--host", "0.0.0.0", "--port", "0", "--insecure-no-auth").exit_code == 0
    assert served[0]["insecure_no_auth"] is True


def test_serve_refuses_a_database_that_is_not_migrated(
    empty_database_url: str, served: list[dict[str, Any]]
) -> None:
    result = invoke(["serve", "--port", "0"], url=empty_database_url)
    assert result.exit_code == ExitCode.NOT_MIGRATED
    assert "ecl-db migrate" in result.stderr
    assert served == []


def test_serve_starts_with_a_warning_when_the_database_is_down(
    backend: str, tmp_path: Path, served: list[dict[str, Any]]
) -> None:
    if backend == "sqlite":
        # A SQLite file that is not there is not down but never migrated: read
        # commands never create it.
        result = invoke(["serve", "--port", "0"], url=f"sqlite:///{tmp_path}/missing/ecl.db")
        assert result.exit_code == ExitCode.NOT_MIGRATED
        assert "no SQLite file yet" in result.stderr
        assert served == []
        return
    result = invoke(["serve", "--port", "0"], url="postgresql://postgres@127.0.0.1:9/ecl")
    assert result.exit_code == 0, result.output
    assert "Warning:" in result.stderr
    assert "the pages say so until it answers" in result.stderr
    assert len(served) == 1


def test_serve_says_when_the_port_is_taken(ecl_db: Invoke, served: list[dict[str, Any]]) -> None:
    taken = server.bind("127.0.0.1", 0)
    try:
        result = ecl_db("serve", "--port", str(taken.getsockname()[1]))
    finally:
        taken.close()
    assert result.exit_code == ExitCode.USAGE
    assert "cannot listen on 127.0.0.1:" in result.stderr


def test_serve_without_the_web_extra_says_which_to_install(
    ecl_db: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "ecl_persistence.web.server", raising=False)
    monkeypatch.delattr(web, "server", raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = ecl_db("serve")
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr == f"Error: {MISSING_WEB_EXTRA}\n"


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_a_newcomer_runs_the_demo_then_looks_at_it_in_the_dashboard(
    database_url: str, tmp_path: Path
) -> None:
    environment = {**os.environ, "ECL_DATABASE_URL": database_url, "PYTHONPATH": str(REPOSITORY)}
    command = [sys.executable, "-m", "ecl_persistence"]
    demo = subprocess.run(
        [*command, "demo", "--json"], cwd=tmp_path, env=environment, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    workflow_id = json.loads(demo.stdout)["workflow"]["id"]
    with subprocess.Popen(
        [*command, "serve", "--port", "0"], cwd=tmp_path, env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        try:
            _look_at_the_demo(process, workflow_id)
        finally:
            process.terminate()


def _look_at_the_demo(process: subprocess.Popen[str], workflow_id: str) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "read-only on http://127.0.0.1:" in line, line
    base = line.split("read-only on ")[1].split()[0].rstrip("/")
    deadline = time.monotonic() + 30
    while True:
        try:
            status, page = _get(base + "/")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert status == 200
    assert workflow_id in page
    status, page = _get(f"{base}/workflows/{workflow_id}")
    assert status == 200
    assert page.count('class="bar"') == 4, "gather, summarise twice, publish"
    assert "summary.md" in page
