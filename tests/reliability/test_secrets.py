"""The password and payload values never reach a log record, an error, a repr or tool output.

Every logger the stack uses is captured at DEBUG with the engine's ``echo``
on, while operations fail in every way we can provoke; tracebacks are
formatted in full, as a logger or an error tracker would print them. The
``ecl-db`` command line is tested where it is built.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import StatementError
from tests.factories import (
    REPOSITORY,
    WORKFLOWS_TABLE,
    StepExecutionFactory,
    WorkflowFactory,
    workflow_row,
)
from tests.reliability._support import POSTGRES_ONLY, SQLITE_ONLY

from ecl_persistence import (
    ConnectionFailedError,
    ConstraintViolationError,
    Database,
    DatabaseConfig,
    DbError,
    QueryFailedError,
    ValidationError,
)
from ecl_persistence.config import mask_url
from ecl_persistence.migrations import alembic_ini_path

PASSWORD = "Pw-Never-Shown-7f3a"
PAYLOAD = "Payload-Never-Shown-91c2"
LOGGERS = ("sqlalchemy", "alembic", "asyncpg", "aiosqlite", "asyncio", "ecl_persistence")

BAD_URLS = [
    f"postgresql://ecl:{PASSWORD}@127.0.0.1:notaport/ecl",  # does not parse
    f"postgresql://ecl:{PASSWORD}@[::1/ecl",  # does not parse
    f"postgresql://ecl:Pw@{PASSWORD}@127.0.0.1:1/ecl",  # "@" in the password not encoded
    f"mysql://ecl:{PASSWORD}@127.0.0.1/ecl",  # unsupported
    f"postgresql://ecl:{PASSWORD}@127.0.0.1:1/ecl",  # nothing listens
    f"postgresql://ecl@127.0.0.1:1/ecl?password={PASSWORD}",  # password as a parameter
    f"postgresql://ecl:other@127.0.0.1:1/ecl?password={PASSWORD}",  # given twice
]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger of the stack, down to DEBUG."""
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def exposed(error: BaseException) -> str:
    """All a person could see of ``error``: message, repr and the full printed chain."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


def logged(logs: pytest.LogCaptureFixture) -> str:
    """Every captured record, formatted with its traceback if it has one."""
    formatter = logging.Formatter()
    return "\n".join(formatter.format(record) for record in logs.records)


async def _failure(work: Any) -> BaseException:
    try:
        await work
    except Exception as error:
        return error
    raise AssertionError("expected the operation to fail")


def _with_password(url: str) -> str:
    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


@POSTGRES_ONLY
async def test_password_stays_out_of_logs_errors_reprs_and_echo(
    database_url: str, logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    url = _with_password(database_url)  # the test server trusts, so any password works
    shown: list[str] = []
    async with Database.from_url(url, echo=True) as db:
        await db.migrate()
        await db.ping()
        async with db.session() as uow:
            workflow = await uow.workflows.create(WorkflowFactory.build())
        shown += [repr(db), repr(db.config), repr(db.engine.url), str(db.engine.url)]
        duplicate = await _failure(_create(db, workflow_row(workflow)))
        assert isinstance(duplicate, ConstraintViolationError)
        bad_sql = await _failure(_execute(db, "SELECT * FROM no_such_table"))
        assert isinstance(bad_sql, QueryFailedError)
        shown += [exposed(duplicate), exposed(bad_sql)]
    async with Database.from_url(f"{database_url}?password={PASSWORD}") as db:
        await db.ping()
        shown += [repr(db), mask_url(db.config.url), repr(db.engine.url)]
    for bad in (
        make_url(url).set(database="ecl_no_such_database"),
        make_url(url).set(port=1),
    ):
        async with Database.from_url(bad.render_as_string(hide_password=False), echo=True) as db:
            error = await _failure(db.ping())
            assert isinstance(error, ConnectionFailedError)
            shown.append(exposed(error))
    for bad_url in BAD_URLS:
        try:
            async with Database.from_url(bad_url, timeout_secs=2) as db:
                shown.append(repr(db))
                shown.append(exposed(await _failure(db.ping())))
        except ValidationError as refused:
            shown.append(exposed(refused))
        shown.append(mask_url(bad_url))
    out, err = capfd.readouterr()
    assert "SELECT 1" in out + logged(logs)  # echo was on and captured
    for place in [*shown, logged(logs), out, err]:
        assert PASSWORD not in place
        assert PAYLOAD not in place


async def _create(db: Database, row: dict[str, Any]) -> None:
    async with db.session() as uow:
        await uow.execute(insert(WORKFLOWS_TABLE), row, action="insert a workflow row")


async def _execute(db: Database, statement: str) -> None:
    async with db.session() as uow:
        await uow.execute(text(statement), action="run raw SQL")


async def test_payload_values_stay_out_of_errors_logs_and_echo(
    database_url: str, logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    secret_input = {"api_key": PAYLOAD}
    workflow = WorkflowFactory.build(input=secret_input, metadata={"note": PAYLOAD})
    errors: list[BaseException] = []
    async with Database.from_url(database_url, echo=True) as db:
        async with db.session() as uow:
            await uow.workflows.create(workflow)
        # A duplicate key, a CHECK failure (PostgreSQL's DETAIL quotes the whole
        # row) and a value refused while binding, each with the payload in the row.
        errors.append(await _failure(_create(db, workflow_row(workflow))))
        bad_state = {**workflow_row(WorkflowFactory.build(input=secret_input)), "state": "x"}
        errors.append(await _failure(_create(db, bad_state)))
        naive = {**workflow_row(WorkflowFactory.build(input=secret_input))}
        naive["created_at"] = datetime(2024, 1, 1)
        errors.append(await _failure(_create(db, naive)))
        if db.dialect == "postgresql":
            # asyncpg quotes a value it cannot encode in its own message.
            wrong_type = {**workflow_row(WorkflowFactory.build()), "version": PAYLOAD}
            errors.append(await _failure(_create(db, wrong_type)))
    assert [type(error) for error in errors][:3] == [
        ConstraintViolationError,
        ConstraintViolationError,
        ValidationError,
    ]
    assert all(isinstance(error, DbError) for error in errors)
    out, err = capfd.readouterr()
    assert "INSERT INTO workflows" in out + logged(logs)  # echo was on and captured
    for place in [*map(exposed, errors), logged(logs), out, err]:
        assert PAYLOAD not in place


@SQLITE_ONLY
async def test_sqlite_driver_debug_records_carry_no_bound_values(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # aiosqlite logs every call it runs on its thread with the call's arguments;
    # the driver's calls must carry no statement parameter, so no payload.
    caplog.set_level(logging.DEBUG, logger="aiosqlite")
    workflow = WorkflowFactory.build(input={"api_key": PAYLOAD}, metadata={"note": PAYLOAD})
    steps = StepExecutionFactory.build_batch(2, workflow_id=workflow.id, input={"q": PAYLOAD})
    async with Database.from_url(database_url) as db:
        async with db.session() as uow:
            await uow.workflows.create(workflow)
            await uow.step_executions.create_many(steps)
            await uow.workflows.update_output(workflow.id, {"answer": PAYLOAD})
        async with db.session(read_only=True) as uow:
            stored = await uow.workflows.get(workflow.id)
            listed = await uow.workflows.list_by_definition(workflow.definition_id)
            stored_steps = await uow.step_executions.get_for_workflow(workflow.id)
    assert stored is not None
    assert stored.output == {"answer": PAYLOAD}
    assert [w.id for w in listed] == [workflow.id]
    assert [s.input for s in stored_steps] == [{"q": PAYLOAD}] * 2
    driver_records = [record for record in caplog.records if record.name == "aiosqlite"]
    # The driver's records were captured: one "executing" per call on its thread.
    assert sum(record.msg.startswith("executing") for record in driver_records) >= 6
    for record in driver_records:
        assert PAYLOAD not in record.getMessage()
        assert PAYLOAD not in repr(record.args)
    assert PAYLOAD not in logged(caplog)


async def test_the_engine_log_at_debug_shows_no_row_value(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # At DEBUG, SQLAlchemy logs every row a statement returns; hide_parameters
    # covers bound values only.
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    workflow = WorkflowFactory.build(input={"api_key": PAYLOAD})
    async with Database.from_url(database_url) as db:
        async with db.session() as uow:
            await uow.workflows.create(workflow)
        async with db.session(read_only=True) as uow:
            stored = await uow.workflows.get(workflow.id)
            listed = await uow.workflows.list_by_definition(workflow.definition_id)
    assert stored is not None
    assert stored.input == {"api_key": PAYLOAD}
    assert [w.id for w in listed] == [workflow.id]
    rows = [record for record in caplog.records if record.msg == "Row %r"]
    assert len(rows) >= 2, "the engine logged no row: the check below would prove nothing"
    assert PAYLOAD not in logged(caplog)


async def test_sqlalchemy_statement_errors_hide_the_bound_payload(database_url: str) -> None:
    # Straight on the engine, without the package's translation: SQLAlchemy's
    # own error text holds the statement but not its parameters.
    workflow = WorkflowFactory.build(input={"api_key": PAYLOAD})
    naive = {**workflow_row(WorkflowFactory.build(input={"api_key": PAYLOAD}))}
    naive["created_at"] = datetime(2024, 1, 1)
    async with Database.from_url(database_url) as db, db.engine.connect() as connection:
        await connection.execute(insert(WORKFLOWS_TABLE), workflow_row(workflow))
        for row in (workflow_row(workflow), naive):
            with pytest.raises(StatementError) as caught:
                await connection.execute(insert(WORKFLOWS_TABLE), row)
            assert "INSERT INTO workflows" in str(caught.value)
            assert PAYLOAD not in str(caught.value)
            await connection.rollback()


def _configuration_shown(url: str) -> str:
    try:
        config = DatabaseConfig(url=url)
    except ValidationError as error:
        return exposed(error)
    return f"{config!r} {Database(config)!r}"


@pytest.mark.parametrize("url", BAD_URLS)
def test_password_stays_out_of_configuration_errors_and_reprs(url: str) -> None:
    assert PASSWORD not in _configuration_shown(url)
    assert PASSWORD not in mask_url(url)


async def _alembic(*args: str, url: str) -> tuple[int, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        "-c",
        str(alembic_ini_path()),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=REPOSITORY,
        env={**os.environ, "ECL_DATABASE_URL": url},
    )
    output, _ = await child.communicate()
    return child.returncode or 0, output.decode()


async def test_password_stays_out_of_alembic_output_for_bad_urls() -> None:
    unparsable, _, unencoded_at, _, refused, as_parameter, _ = BAD_URLS
    cases = {
        "unparsable": _alembic("upgrade", "head", url=unparsable),
        "unparsable -x url": _alembic("-x", f"url={unparsable}", "upgrade", "head", url=""),
        "unencoded @": _alembic("upgrade", "head", url=unencoded_at),
        "refused": _alembic("upgrade", "head", url=refused),
        "password parameter, offline": _alembic("upgrade", "head", "--sql", url=as_parameter),
    }
    results = dict(zip(cases, await asyncio.gather(*cases.values()), strict=True))
    for case, (_, output) in results.items():
        assert PASSWORD not in output, case
    assert [case for case, (returncode, _) in results.items() if returncode == 0] == [
        "password parameter, offline"
    ]
