"""Sessions of ecl-persistence: plain ``nox`` runs them all, on SQLite and on PostgreSQL.

The PostgreSQL server comes from ``ECL_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the suite makes and drops its
own scratch databases there.
"""

from __future__ import annotations

import os
import shutil

import nox
from packaging.requirements import Requirement

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "tests-sqlite",
    "tests-postgres",
    "tests-pgbouncer",
    "migrations",
    "coverage",
    "docs",
    "bench-smoke",
]

PYPROJECT = nox.project.load_toml("pyproject.toml")
# One marker expression per database: the same tests run on each.
DATABASES = {"sqlite": "not postgresql", "postgres": "postgresql"}
COVERAGE_FAIL_UNDER = 95
# Debian packages a database's tests need, as (binary, package): the throwaway
# clusters of tests/support sign their certificates with openssl and put
# PgBouncer in front of a server; the dashboard's tests drive Debian's Chromium
# (Playwright's own browser download is not used).
CHROMIUM = ("/usr/bin/chromium", "chromium")
DEBIAN_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "sqlite": (CHROMIUM,),
    "postgres": (("/usr/bin/openssl", "openssl"), ("/usr/sbin/pgbouncer", "pgbouncer"), CHROMIUM),
}
# The package as the tests use it: the command, the dashboard, the OpenTelemetry API.
EXTRAS = ".[cli,web,otel]"
_apt_updated = False


def install(session: nox.Session, *groups: str, editable: bool = True) -> None:
    """Install the dependency groups, and the package (editable, with its extras)."""
    requirements = [r for group in groups for r in nox.project.dependency_groups(PYPROJECT, group)]
    session.install(*(["-e", EXTRAS] if editable else []), *requirements)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting."""
    install(session, "lint", editable=False)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the Alembic environment."""
    install(session, "typing")
    session.run("mypy")


def ensure_debian_packages(session: nox.Session, *requirements: tuple[str, str]) -> None:
    """Install the Debian package of each ``(binary_path, package)`` whose binary is missing.

    As root: ``apt-get update`` (once per nox run), then ``apt-get install`` of
    the missing packages. As anyone else, or without apt-get: the session
    fails, naming the packages to install.
    """
    global _apt_updated
    missing = [package for binary, package in requirements if not os.access(binary, os.X_OK)]
    if not missing:
        return
    packages = " ".join(dict.fromkeys(missing))
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        session.error(f"missing Debian packages: install them with `apt-get install {packages}`")
    environment = {"DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        session.run("apt-get", "update", "-qq", external=True, env=environment)
        _apt_updated = True
    session.run(
        "apt-get", "install", "-y", "-qq", "--no-install-recommends", *dict.fromkeys(missing),
        external=True, env=environment,
    )  # fmt: skip
    still_missing = [binary for binary, _ in requirements if not os.access(binary, os.X_OK)]
    if still_missing:
        session.error(f"apt-get install {packages} done, still missing: {', '.join(still_missing)}")


def _pytest(session: nox.Session, marker: str, *paths: str) -> None:
    session.run(
        "coverage", "run", "-m", "pytest", "-m", marker, *paths, *session.posargs,
        env={"COVERAGE_FILE": f".coverage.{session.name}"},
    )  # fmt: skip


for _database, _marker in DATABASES.items():

    @nox.session(name=f"tests-{_database}")
    def tests(session: nox.Session, marker: str = _marker, database: str = _database) -> None:
        """The test suite on one database (migration tests run in their own session)."""
        ensure_debian_packages(session, *DEBIAN_PACKAGES[database])
        install(session, "tests")
        _pytest(session, marker, "--ignore=tests/migrations", "tests")


# The PostgreSQL tests that also run through a PgBouncer in transaction pooling
# mode (ECL_TEST_PGBOUNCER=1, see tests/conftest.py and docs/testing.md): the
# repositories, the unit of work, the recorder and the workers in one process
# (tests/scale covers PgBouncer with workers, listeners and the failure the
# setting prevents). Left out, to keep the session near two minutes: the rest.
PGBOUNCER_TESTS = tuple(
    f"tests/integration/test_{name}.py"
    for name in (
        "workflow_repository", "step_execution_repository", "claims", "claim_order",
        "transitions", "idempotent_create", "optimistic_concurrency", "unit_of_work",
        "recorder", "worker_runs", "worker_steps", "operations", "concurrency_limits",
    )
)  # fmt: skip


@nox.session(name="tests-pgbouncer")
def tests_pgbouncer(session: nox.Session) -> None:
    """A large part of the PostgreSQL suite again, through a real PgBouncer (transaction mode)."""
    ensure_debian_packages(session, *DEBIAN_PACKAGES["postgres"])
    install(session, "tests")
    session.run(
        "coverage", "run", "-m", "pytest", "-m", "postgresql", *PGBOUNCER_TESTS, *session.posargs,
        env={"COVERAGE_FILE": f".coverage.{session.name}", "ECL_TEST_PGBOUNCER": "1"},
    )  # fmt: skip


@nox.session
def migrations(session: nox.Session) -> None:
    """Migrations on both databases: upgrade, downgrade, alembic check, the installed wheel."""
    install(session, "tests")
    session.install("uv")
    _pytest(session, "postgresql or not postgresql", "tests/migrations")


@nox.session
def soak(session: nox.Session) -> None:
    """The long variants of the reliability tests on both databases; not in the default run."""
    install(session, "tests")
    session.run("pytest", "tests/reliability", *session.posargs, env={"ECL_TEST_SOAK": "1"})


def _floors(requirements: list[str]) -> list[str]:
    """Each requirement pinned to the lowest version it allows, its ``>=`` bound."""
    pins = []
    for line in requirements:
        requirement = Requirement(line)
        bounds = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(bounds) != 1:
            raise ValueError(f"{line!r} in pyproject.toml needs exactly one '>=' floor")
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pins.append(f"{requirement.name}{extras}=={bounds[0]}")
    return pins


@nox.session
def floors(session: nox.Session) -> None:
    """The test suite on both databases at the declared floors (not in the default run).

    The package's dependencies and its cli extra are pinned to the ``>=``
    bounds in pyproject.toml, so the check cannot drift from what is declared;
    the test tools stay at their latest. Migration tests included.
    """
    project = PYPROJECT["project"]
    ensure_debian_packages(session, *DEBIAN_PACKAGES["postgres"])
    install(session, "tests")
    session.install(*_floors([*project["dependencies"], *project["optional-dependencies"]["cli"]]))
    session.install("uv")  # tests/migrations/test_wheel.py builds and installs the wheel
    for marker in DATABASES.values():
        session.run("pytest", "-m", marker, "tests", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the raw drivers and peer layers (not in the default run).

    Arguments after ``--`` go to ``python -m benchmarks``, for example
    ``nox -s bench -- --backend sqlite --rounds 9 --json bench.json``.
    """
    install(session, "bench")
    session.run("python", "-m", "benchmarks", *(session.posargs or ["--backend", "both"]))


@nox.session(name="bench-smoke")
def bench_smoke(session: nox.Session) -> None:
    """Every contender of every benchmark workload once, at tiny scale, on both backends.

    The peers (advanced-alchemy, DBOS Transact, procrastinate) are installed
    only here and in ``bench``; a contender that breaks fails the session.
    """
    install(session, "bench")
    session.run("python", "-m", "benchmarks.smoke", *session.posargs)


@nox.session
def coverage(session: nox.Session) -> None:
    """Branch coverage combined over every test session; fails under the threshold."""
    session.install("coverage[toml]")
    session.run("coverage", "combine")
    session.run("coverage", "report", f"--fail-under={COVERAGE_FAIL_UNDER}")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built with --strict; every public name must be in the reference."""
    install(session, "docs")
    # NO_MKDOCS_2_WARNING: Material's banner about its successor is not a build warning.
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )
    session.run("python", "docs/check_reference.py", "site/objects.inv")
