"""The dashboard over HTTP, without a browser: JSON under /api, errors, the token, headers."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from tests.web.seed import (
    LISTED,
    SECRET,
    TOTAL_TOKENS,
    TRACED_COST,
    XSS_ERROR,
    XSS_MODEL,
    XSS_STEP,
    Seeded,
)

from ecl_persistence import DatabaseConfig, QueryFailedError
from ecl_persistence.web import create_app, pages
from ecl_persistence.web.guard import LOOPBACK_HOSTS, token_matches
from ecl_persistence.web.server import is_loopback

TOKEN = "a-long-enough-token-for-tests"


def _client(url: str, **options: object) -> TestClient:
    app = create_app(DatabaseConfig(url=url), **options)  # type: ignore[arg-type]
    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)


@pytest.fixture
def client(database_url: str, seeded: Seeded) -> Iterator[TestClient]:
    with _client(database_url, hosts=LOOPBACK_HOSTS) as opened:
        yield opened


def test_api_workflows_pages_through_everything_with_counts(
    client: TestClient, seeded: Seeded
) -> None:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        document = client.get("/api/workflows", params=params).json()
        seen += [item["id"] for item in document["items"]]
        cursor = document["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(w.id) for w in seeded.newest_first]
    assert document["counts"] == {
        "pending": 2,
        "running": 1,
        "completed": 3,
        "failed": 1,
        "cancelled": 0,
    }
    assert sum(document["counts"].values()) == LISTED


def test_api_workflow_is_the_show_document_and_hides_payloads(
    client: TestClient, seeded: Seeded
) -> None:
    response = client.get(f"/api/workflows/{seeded.traced.id}")
    assert response.status_code == 200
    document = response.json()
    assert [e["step_id"] for e in document["step_executions"]] == [
        "search",
        "search",
        "rank",
        "answer",
    ]
    assert document["stats"]["total_tokens"] == 35
    assert SECRET not in response.text
    assert document["workflow"]["input_bytes"] > len(SECRET)


def test_payloads_are_shown_only_when_the_server_was_started_with_them(
    database_url: str, seeded: Seeded
) -> None:
    with _client(database_url, payloads=True) as client:
        page = client.get(f"/workflows/{seeded.traced.id}")
        document = client.get(f"/api/workflows/{seeded.traced.id}").json()
    assert SECRET in page.text
    assert document["workflow"]["input"] == {"secret": SECRET}


def test_api_usage_sums_tokens_by_definition_and_day(client: TestClient, seeded: Seeded) -> None:
    document = client.get("/api/usage").json()
    assert document["total_tokens"] == TOTAL_TOKENS
    assert sum(day["tokens"] for day in document["by_day"]) == TOTAL_TOKENS
    assert len(document["by_day"]) == 30
    assert [(u["definition_id"], u["tokens"]) for u in document["by_definition"]] == [
        (seeded.hostile.definition_id, 100),
        ("research", 35),
    ]
    # The ledger by model, its costs as exact text; attempts without a model last.
    by_model = [
        (m["key"], m["attempts"], m["total_tokens"], m["cost"]) for m in document["by_model"]
    ]
    assert by_model == [
        (XSS_MODEL, 1, 5, None),
        ("model-a", 2, 30, "0.250001"),
        (None, 2, 0, None),
    ]
    assert document["cost"] == str(TRACED_COST)
    # A window that ends before the seeded attempts holds none of them.
    empty = client.get("/api/usage", params={"until": "3d", "since": "10d"}).json()
    assert empty["total_tokens"] == 0
    assert len(empty["by_day"]) == 8


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/workflows", {"state": "paused"}),
        ("/api/workflows", {"limit": "1000"}),
        ("/api/workflows", {"limit": "-1"}),
        ("/api/workflows", {"definition": "x" * 256}),
        ("/api/workflows", {"since": "2024-05-02", "until": "2024-05-01"}),
        ("/api/workflows", {"cursor": "c1.forged"}),
        ("/api/workflows", {"until": "\x00"}),
        ("/api/usage", {"since": "200d"}),
        ("/api/usage", {"since": "tomorrow"}),
        ("/api/workflows/not-a-uuid", {}),
        ("/api/workflows/01a2166d-444f-774f-b9dc-781bdeb67564", {"x": "1"}),
    ],
)
def test_bad_parameters_get_400_with_a_json_error(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert "Traceback" not in response.text


def test_a_repeated_parameter_is_refused(client: TestClient) -> None:
    response = client.get("/?state=failed&state=running")
    assert response.status_code == 400
    assert "more than once" in response.text


def test_an_unknown_workflow_or_path_gets_404(client: TestClient) -> None:
    unknown = "01a2166d-444f-774f-b9dc-781bdeb67564"
    assert client.get(f"/workflows/{unknown}").status_code == 404
    missing = client.get(f"/api/workflows/{unknown}")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": f"there is no workflow {unknown}"},
    )
    page = client.get("/nowhere")
    assert page.status_code == 404
    assert "404 Not found" in page.text


def test_the_dashboard_never_writes(client: TestClient) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = client.request(method, "/api/workflows")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"


def test_every_response_carries_the_safe_headers(client: TestClient) -> None:
    for path in ("/", "/costs", "/api/workflows", "/?state=bad", "/static/dashboard.css"):
        headers = client.get(path).headers
        assert "script-src" not in headers["content-security-policy"]
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"


def test_hostile_text_is_escaped_in_the_html(client: TestClient, seeded: Seeded) -> None:
    html = client.get(f"/workflows/{seeded.hostile.id}").text
    assert XSS_STEP not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "<script>" not in html
    assert "\x1b" not in html
    assert "\u202e" not in html
    assert "\\x1b[31m" in html
    assert XSS_ERROR not in client.get("/").text


def test_without_a_token_only_this_machines_names_are_answered(client: TestClient) -> None:
    assert client.get("/", headers={"host": "localhost:8000"}).status_code == 200
    rebound = client.get("/", headers={"host": "attacker.example"})
    assert rebound.status_code == 421


def test_with_a_token_every_request_must_carry_it(database_url: str, seeded: Seeded) -> None:
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    with _client(database_url, token=TOKEN) as client:
        refused = client.get("/api/workflows")
        assert refused.status_code == 401
        assert "Basic" in refused.headers["www-authenticate"]
        assert client.get("/", headers={"authorization": "Bearer wrong"}).status_code == 401
        bearer = client.get("/api/workflows", headers={"authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        assert client.get("/", headers={"authorization": f"Basic {basic}"}).status_code == 200
        # The token replaces the Host check: any name, with the token.
        other = {"authorization": f"Bearer {TOKEN}", "host": "dashboard.internal"}
        assert client.get("/", headers=other).status_code == 200


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", f"bearer {TOKEN}x", "Basic !!!", f"Digest {TOKEN}", "Basic " + "a" * 9],
)
def test_token_matches_refuses_anything_but_the_token(header: str | None) -> None:
    assert not token_matches(header, TOKEN)
    assert token_matches(f"bearer  {TOKEN} ", TOKEN)


def test_a_database_that_is_down_gives_503(backend: str, tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path}/no-such-directory/ecl.db"
        if backend == "sqlite"
        else "postgresql://postgres@127.0.0.1:9/ecl"
    )
    with _client(url) as client:
        page = client.get("/")
        api = client.get("/api/usage")
    assert page.status_code == 503
    assert "503 Database unavailable" in page.text
    assert api.status_code == 503
    assert "cannot be reached" in api.json()["error"]


def test_the_dashboard_needs_neither_click_nor_rich(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['click'] = sys.modules['rich'] = None\n"
        "from ecl_persistence import DatabaseConfig\n"
        "from ecl_persistence.web import create_app\n"
        f"create_app(DatabaseConfig(url='sqlite:///{tmp_path}/ecl.db'))\n"
        "print('built')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, "built\n"), done.stderr


@pytest.mark.parametrize(
    ("error", "status", "title"),
    [
        (QueryFailedError("list workflows failed"), 503, "503 Database error"),
        (RuntimeError("a bug with a secret in it"), 500, "500 Internal error"),
    ],
)
def test_other_failures_give_a_page_without_details(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    status: int,
    title: str,
) -> None:
    async def fail(*args: object) -> None:
        raise error

    monkeypatch.setattr(pages, "load_listing", fail)
    response = client.get("/")
    assert response.status_code == status
    assert title in response.text
    assert str(error) not in response.text
    assert "Traceback" not in response.text
    assert type(error).__name__ in caplog.text
    assert str(error) not in caplog.text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.7", False),
        ("dashboard.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_ipv6_loopback_name_is_answered_too(client: TestClient) -> None:
    assert client.get("/", headers={"host": "[::1]:8000"}).status_code == 200
    assert client.get("/", headers={"host": "[::2]:8000"}).status_code == 421


def test_the_workflow_page_gives_the_claim_order(client: TestClient, seeded: Seeded) -> None:
    html = client.get(f"/workflows/{seeded.traced.id}").text
    workflow = seeded.traced
    assert f"<dt>priority</dt><dd>{workflow.priority}</dd>" in html
    assert '<dt>run after (UTC)</dt><dd class="mono">-</dd>' in html
    assert client.get(f"/api/workflows/{workflow.id}").json()["workflow"]["priority"] == 0
