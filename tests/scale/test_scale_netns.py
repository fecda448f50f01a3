"""Workers on other hosts: processes in network namespaces of the test's own, one cluster.

Each namespace reaches the throwaway cluster over its own veth pair, on
addresses from 192.0.2.0/24 (reserved for documentation) that the test
assigns and removes. Cutting one namespace's link mid-lease leaves its
worker unable to renew: another worker takes the workflow over once the
lease ran out, and when the link comes back every write of the cut-off
worker is refused (fencing).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.factories import (
    REPOSITORY,
    WorkflowFactory,
    create_workflows,
    snapshot,
    terminate_when_completed,
)
from tests.support.netns import Host, Hosts, netns_unavailable
from tests.support.pg_cluster import Cluster
from tests.worker_process import read_effects, run_steps, steps_of

from ecl_persistence import Database, Worker, WorkflowState
from ecl_persistence.domain import utc_now

pytestmark = pytest.mark.postgresql
GUARD = 60.0  # only turns a hang into a failure
WRITES = (
    "start", "complete-step", "artifact", "output", "complete", "fail", "heartbeat", "release",
    "run-step", "run-complete",
)  # fmt: skip


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    """Two namespaces with a veth pair each; skipped, saying why, where they cannot be made."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"workers on other hosts need network namespaces: {reason}")
    with Hosts(2) as made:
        yield made


@pytest.fixture(scope="module")
def cluster(hosts: Hosts) -> Iterator[Cluster]:
    """A throwaway cluster listening on the host ends; migrated database ``ecl``."""
    with Cluster(
        listen_addresses=[host.server_address for host in hosts.hosts],
        trusted_networks=hosts.networks,
        # A transaction cut off mid-way would keep its row locks until TCP gives up.
        settings={"idle_in_transaction_session_timeout": "1s"},
    ) as made:
        url = made.create_database("ecl")

        async def migrate() -> None:
            async with Database.from_url(url) as database:
                await database.migrate()

        asyncio.run(migrate())
        yield made


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[Database]:
    """The cluster's database, emptied, reached over loopback (the test's own host)."""
    database = Database.from_url(cluster.url("ecl"), timeout_secs=30)
    async with database.session() as uow:
        await uow.execute(text("TRUNCATE workflows CASCADE"), action="empty")
    yield database
    await database.dispose()


async def spawn_in(host: Host, cluster: Cluster, *args: str) -> asyncio.subprocess.Process:
    """A worker process inside ``host``'s namespace, connecting over its veth pair."""
    mode, *rest = args
    url = cluster.url("ecl", host=host.server_address)
    argv = host.command(sys.executable, "-m", "tests.worker_process", mode, url, *rest)
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPOSITORY,
    )


async def line_of(process: asyncio.subprocess.Process) -> list[str]:
    assert process.stdout is not None
    async with asyncio.timeout(GUARD):
        line = await process.stdout.readline()
    if not line:
        assert process.stderr is not None
        pytest.fail(f"the worker ended early; stderr:\n{(await process.stderr.read()).decode()}")
    return line.decode().split()


async def test_workers_in_two_namespaces_complete_every_workflow_exactly_once(
    hosts: Hosts, cluster: Cluster, db: Database, tmp_path: Path
) -> None:
    workflows = WorkflowFactory.build_batch(8)
    await create_workflows(db, *workflows)
    effects = tmp_path / "effects.log"
    processes = [
        await spawn_in(host, cluster, "work", f"worker-{n}", str(effects))
        for n, host in enumerate(hosts.hosts)
    ]
    try:
        for process in processes:
            assert await line_of(process) == ["ready"]
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        outputs = await terminate_when_completed(db, processes, len(workflows), seconds=GUARD)
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
    assert [process.returncode for process in processes] == [0, 0], outputs
    calls = Counter(read_effects(effects))
    expected = {("fetch", 1), ("summarise", 1), ("summarise", 2), ("publish", 1)}
    for workflow in workflows:
        made = {(step, attempt) for (wid, step, attempt) in calls if wid == str(workflow.id)}
        assert made == expected
    assert set(calls.values()) == {1}, "no step attempt ran twice"
    async with db.session(read_only=True) as uow:
        stored = [await uow.workflows.get(workflow.id) for workflow in workflows]
    assert {(w.state, w.claim_count) for w in stored if w is not None} == {
        (WorkflowState.COMPLETED, 1)
    }
    async with db.session(read_only=True) as uow:
        trails = [await uow.workflows.history(workflow.id) for workflow in workflows]
    owners = {t.actor for trail in trails for t in trail} - {None}
    assert owners <= {"worker-0", "worker-1"}


async def test_a_worker_cut_off_mid_lease_is_taken_over_and_fenced_when_back(
    hosts: Hosts, cluster: Cluster, db: Database, tmp_path: Path
) -> None:
    host = hosts[0]
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    effects = tmp_path / "effects.log"
    process = await spawn_in(host, cluster, "hang", "cut-off", str(effects), "2.0")
    try:
        marker, workflow_id, _execution = await line_of(process)
        assert (marker, workflow_id) == ("in-step", str(workflow.id))
        host.cut()
        try:
            # A heartbeat caught mid-transaction is rolled back by the server after 1 s.
            await asyncio.sleep(1.5)
            async with db.session(read_only=True) as uow:
                held = await uow.workflows.get(workflow.id)
            assert held is not None
            assert held.lease_owner == "cut-off"
            assert held.lease_expires_at is not None
            await asyncio.sleep(max(0.0, (held.lease_expires_at - utc_now()).total_seconds()))
            rescuer = Worker(db, "rescuer", poll_seconds=0.05)
            async with asyncio.timeout(GUARD):
                async for run in rescuer.runs(until_idle=True):
                    async with run:
                        await run_steps(run, steps_of(run, str(effects)))
            before = await snapshot(db)
        finally:
            host.mend()
        async with asyncio.timeout(GUARD):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    after = await snapshot(db)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "lost"
    assert dict(line.split() for line in lines[1:-1]) == dict.fromkeys(WRITES, "LeaseLostError")
    assert lines[-1] == "done"
    assert after == before, "nothing the cut-off worker wrote landed"
    async with db.session(read_only=True) as uow:
        done = await uow.workflows.get(workflow.id)
    assert done is not None
    assert (done.state, done.claim_count) == (WorkflowState.COMPLETED, 2)
