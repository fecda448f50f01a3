"""The dashboard shows cancelled workflows and forks (``docs/operations.md``), over HTTP."""

from __future__ import annotations

from starlette.testclient import TestClient
from tests.cli.helpers import on_database

from ecl_persistence import Database, DatabaseConfig, Workflow
from ecl_persistence.web import create_app
from ecl_persistence.web.guard import LOOPBACK_HOSTS


async def _cancelled_and_fork(db: Database) -> tuple[Workflow, Workflow]:
    async with db.session() as uow:
        original = await uow.workflows.create(Workflow.new("research", {"topic": "tides"}))
        await uow.step_executions.start(original.id, "search", {})
        cancelled = await uow.workflows.cancel(original.id, reason="runaway", actor="ana")
        fork = await uow.workflows.fork(original.id, from_step="search")
    return cancelled, fork


def test_a_cancelled_workflow_and_a_fork_render_in_the_list_the_page_and_the_api(
    database_url: str,
) -> None:
    cancelled, fork = on_database(database_url, _cancelled_and_fork)
    app = create_app(DatabaseConfig(url=database_url), hosts=LOOPBACK_HOSTS)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        listed = client.get("/", params={"state": "cancelled"})
        assert listed.status_code == 200
        assert str(cancelled.id) in listed.text
        assert str(fork.id) not in listed.text
        assert "state-cancelled" in listed.text
        page = client.get(f"/workflows/{cancelled.id}")
        assert page.status_code == 200
        assert "runaway" in page.text
        api = client.get("/api/workflows", params={"state": "cancelled"}).json()
        assert [item["id"] for item in api["items"]] == [str(cancelled.id)]
        assert api["counts"]["cancelled"] == 1
        assert client.get(f"/workflows/{fork.id}").status_code == 200
