"""Fixtures of the throwaway servers: ``pytest_plugins = ("tests.support.fixtures",)`` loads them.

Put that line in ``tests/conftest.py`` for the whole suite, or atop one test module.
Loaded from a test module, that module must not import :mod:`tests.support.pg_cluster`
or :mod:`tests.support.pgbouncer` before pytest does (only for type annotations,
under ``TYPE_CHECKING``), or pytest warns that it cannot rewrite their asserts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from tests.support.pg_cluster import Cluster
from tests.support.pgbouncer import PgBouncer


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A running cluster with TLS available (not required), shared by the session's tests.

    Leave it as you found it: no kill, stop, restart or settings; make your own
    databases on it. For anything else, take :func:`pg_cluster_factory`.
    """
    with Cluster(ssl=True) as cluster:
        yield cluster


@pytest.fixture
def pg_cluster_factory() -> Iterator[Callable[..., Cluster]]:
    """Make running clusters of the test's own: ``pg_cluster_factory(**Cluster options)``.

    Every cluster made is closed, its files removed, when the test ends.
    """
    made: list[Cluster] = []

    def make(**options: object) -> Cluster:
        cluster = Cluster(**options)  # type: ignore[arg-type]
        made.append(cluster)
        cluster.open()
        return cluster

    yield make
    for cluster in reversed(made):
        cluster.close()


@pytest.fixture
def pgbouncer_factory() -> Iterator[Callable[..., PgBouncer]]:
    """Start PgBouncers of the test's own: ``pgbouncer_factory(target, **PgBouncer options)``.

    Every one started is stopped, its files removed, when the test ends.
    """
    made: list[PgBouncer] = []

    def make(target: Cluster | str, **options: object) -> PgBouncer:
        bouncer = PgBouncer(target, **options)  # type: ignore[arg-type]
        made.append(bouncer)
        bouncer.open()
        return bouncer

    yield make
    for bouncer in reversed(made):
        bouncer.close()
