"""``ecl-db workflows list --stale``: running workflows whose lease expired, on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.cli.helpers import Invoke, json_of, on_database
from tests.factories import WorkflowFactory, create_workflows, leased_workflow

from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.domain import utc_now

NOW = utc_now()
LONG_GONE = leased_workflow("worker-a", NOW - timedelta(hours=2), definition_id="research")
JUST_GONE = leased_workflow("worker-b", NOW - timedelta(seconds=30), definition_id="ecl-demo")
ALIVE = leased_workflow("worker-c", NOW + timedelta(hours=1), definition_id="research")


@pytest.fixture
def seeded(database_url: str) -> None:
    others = [WorkflowFactory.build(state=state) for state in ("pending", "completed", "failed")]
    on_database(database_url, lambda db: create_workflows(db, LONG_GONE, JUST_GONE, ALIVE, *others))


@pytest.mark.usefixtures("seeded")
def test_list_stale_shows_the_expired_leases_with_owner_and_expiry(ecl_db: Invoke) -> None:
    result = ecl_db("workflows", "list", "--stale")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line for line in lines if str(LONG_GONE.id) in line or str(JUST_GONE.id) in line]
    assert len(rows) == 2
    assert str(LONG_GONE.id) in rows[0], "the longest expired first"
    assert str(JUST_GONE.id) in rows[1]
    assert "worker-a" in rows[0]
    assert LONG_GONE.lease_expires_at is not None
    assert LONG_GONE.lease_expires_at.strftime("%Y-%m-%d %H:%M:%S") in rows[0]
    assert "lease owner" in lines[0]
    assert str(ALIVE.id) not in result.stdout


@pytest.mark.usefixtures("seeded")
def test_list_stale_json_filters_by_definition_and_limit(ecl_db: Invoke) -> None:
    every = json_of(ecl_db("workflows", "list", "--stale", "--json"))
    assert [item["id"] for item in every["items"]] == [str(LONG_GONE.id), str(JUST_GONE.id)]
    assert every["next_cursor"] is None
    first = every["items"][0]
    assert (first["state"], first["lease_owner"], first["claim_count"]) == (
        "running",
        "worker-a",
        1,
    )
    assert LONG_GONE.lease_expires_at is not None
    assert first["lease_expires_at"] == LONG_GONE.lease_expires_at.isoformat()

    demo = json_of(ecl_db("workflows", "list", "--stale", "--definition", "ecl-demo", "--json"))
    assert [item["id"] for item in demo["items"]] == [str(JUST_GONE.id)]
    limited = json_of(ecl_db("workflows", "list", "--stale", "--limit", "1", "--json"))
    assert [item["id"] for item in limited["items"]] == [str(LONG_GONE.id)]


def test_list_stale_of_a_database_without_any_says_so(ecl_db: Invoke) -> None:
    result = ecl_db("workflows", "list", "--stale")
    assert result.exit_code == 0, result.output
    assert result.stdout == "No stale workflows.\n"


@pytest.mark.parametrize(
    ("extra", "named"),
    [(["--state", "running"], "--state"), (["--cursor", "abc"], "--cursor")],
    ids=["state", "cursor"],
)
def test_list_stale_refuses_state_and_cursor(ecl_db: Invoke, extra: list[str], named: str) -> None:
    result = ecl_db("workflows", "list", "--stale", *extra)
    assert result.exit_code == ExitCode.USAGE
    assert f"--stale cannot be combined with {named}" in result.stderr
