"""How a command reaches the database, and how an expected failure becomes an exit code.

Every command runs its database work through :func:`run_with_database`: the
URL comes from ``--database-url``, else the environment, else the embedded
default; a typed error of ecl-persistence becomes one line on stderr and the
exit code of its kind, never a traceback; and no message shows a password.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import attrs
import click
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ecl_persistence.config import DEFAULT_URL, DatabaseConfig, mask_url
from ecl_persistence.database import Database
from ecl_persistence.errors import (
    ConnectionFailedError,
    DbError,
    NotFoundError,
    PurgeFailedError,
    SchemaNotReadyError,
    SerializationError,
    StoredValueError,
    ValidationError,
)
from ecl_persistence.migrations import alembic_config, current_revision, head_revision

__all__ = [
    "CliError",
    "ExitCode",
    "SchemaStatus",
    "database_url_option",
    "expected_errors",
    "load_config",
    "read_schema_status",
    "run_with_database",
    "shown_url",
]

T = TypeVar("T")

_URL_KEY = "ecl_persistence.cli.database_url"
_URL_VARIABLES = ("ECL_DATABASE_URL", "DATABASE_URL")


class ExitCode(enum.IntEnum):
    """The exit status of ``ecl-db``; every command uses the same codes."""

    OK = 0
    """Done."""
    NO = 1
    """The answer is no: ``check`` found the database behind, an id is unknown, a
    confirmation was declined, or ``demo --resume`` has nothing it may resume."""
    USAGE = 2
    """A bad option or argument: an unknown command, a malformed URL, id or cursor."""
    UNREACHABLE = 3
    """The database cannot be reached: no server, wrong password, no such database."""
    NOT_MIGRATED = 4
    """The database's schema is not at the head revision: run ``ecl-db migrate``."""
    DATABASE_ERROR = 5
    """Any other failure reported by the database (a failed query or migration)."""
    CRASHED = 6
    """``demo --crash-after`` stopped the process on purpose, as a crash would: its
    workflow is left running, leased, for ``demo --resume`` to pick up."""


class CliError(click.ClickException):
    """An expected failure: click prints ``Error: <message>`` on stderr and exits with ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        # click declares exit_code on the class, but reads it from the instance.
        self.exit_code = int(code)  # type: ignore[misc]


def _remember_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # ``meta`` is shared by a context and its children, so the URL may be given
    # before or after the command name; the one closest to the command wins.
    if value is not None:
        ctx.meta[_URL_KEY] = value


database_url_option = click.option(
    "--database-url",
    metavar="URL",
    expose_value=False,
    callback=_remember_url,
    help=(
        "Database to use: sqlite:///path.db or postgresql://user:password@host/db "
        f"[default: $ECL_DATABASE_URL, else $DATABASE_URL, else {DEFAULT_URL}]"
    ),
)
"""The ``--database-url`` option, accepted by the group and by every command."""


def load_config() -> DatabaseConfig:
    """The configuration of this invocation: ``--database-url``, else the environment.

    The other settings (``ECL_DB_MAX_CONNECTIONS``, ``ECL_DB_TIMEOUT_SECS``)
    always come from the environment. Raises :class:`ValidationError`.
    """
    url = click.get_current_context().meta.get(_URL_KEY)
    if url is None:
        return DatabaseConfig.from_env()
    # The option replaces the URL variables, so a broken one cannot fail the command.
    environ = {key: value for key, value in os.environ.items() if key not in _URL_VARIABLES}
    return attrs.evolve(DatabaseConfig.from_env(environ), url=url)


@attrs.frozen
class SchemaStatus:
    """Where a database's schema is, against the newest revision this package ships."""

    revision: str | None
    """The revision the database is at; ``None`` when it was never migrated."""
    head: str
    """The newest revision of this package's migrations."""
    known: bool
    """Whether ``revision`` belongs to this package's history (``None`` does)."""
    exists: bool = True
    """False for a SQLite file that does not exist yet (it was not created to find out)."""

    @property
    def at_head(self) -> bool:
        """Whether the database is at the head revision."""
        return self.revision == self.head

    def describe(self) -> str:
        """A few words for humans: ``at 0001``, ``at no revision`` or ``no SQLite file yet``."""
        if not self.exists:
            return "no SQLite file yet"
        return f"at {self.revision}" if self.revision else "at no revision"

    def problem(self) -> str | None:
        """Why commands cannot use this database, or ``None`` when it is at head."""
        if self.at_head:
            return None
        if not self.known:
            return (
                f"the database is at revision {self.revision}, which this version of "
                f"ecl-persistence does not know (its head is {self.head}): was it "
                "migrated by a newer version?"
            )
        return (
            f"the database is not migrated ({self.describe()}, head is {self.head}): "
            "run `ecl-db migrate`"
        )


def _missing_file(config: DatabaseConfig) -> bool:
    """Whether the database lives in a file (SQLite's) that does not exist yet."""
    path = config.strategy.local_file(config.async_url)
    return path is not None and not path.exists()


async def read_schema_status(db: Database) -> SchemaStatus:
    """Read the database's revision; a missing SQLite file is reported, not created."""
    head = head_revision()
    if _missing_file(db.config):
        return SchemaStatus(revision=None, head=head, known=True, exists=False)
    revision = await current_revision(db.engine)
    known = True
    if revision is not None:
        try:
            ScriptDirectory.from_config(alembic_config()).get_revision(revision)
        except CommandError:
            known = False
    return SchemaStatus(revision=revision, head=head, known=known)


def _exit_code(error: DbError) -> ExitCode:
    if isinstance(error, PurgeFailedError) and isinstance(error.__cause__, DbError):
        # What stopped it decides: its message says how many it had purged.
        return _exit_code(error.__cause__)
    if isinstance(error, SchemaNotReadyError):
        return ExitCode.NOT_MIGRATED
    if isinstance(error, StoredValueError):
        return ExitCode.DATABASE_ERROR
    if isinstance(error, ValidationError | SerializationError):
        return ExitCode.USAGE
    if isinstance(error, ConnectionFailedError):
        return ExitCode.UNREACHABLE
    if isinstance(error, NotFoundError):
        return ExitCode.NO
    return ExitCode.DATABASE_ERROR


def _given_url() -> str | None:
    given = click.get_current_context().meta.get(_URL_KEY)
    return given or next((os.environ[v] for v in _URL_VARIABLES if os.environ.get(v)), None)


def _password_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return make_url(url).password
    except (ArgumentError, ValueError):
        return None


@contextmanager
def expected_errors() -> Iterator[None]:
    """Turn the typed errors of ecl-persistence into :class:`CliError`.

    Our messages never hold a password; as a second line of defence, the
    password of the URL in use is masked if it ever appears in one.
    """
    try:
        yield
    except DbError as error:
        message = str(error)
        password = _password_of(_given_url())
        if password:
            message = message.replace(password, "***")
        raise CliError(message, _exit_code(error)) from None


def run_with_database(
    action: Callable[[Database], Awaitable[T]], *, require_migrated: bool = True
) -> T:
    """Run ``action`` on this invocation's database, then dispose of the database.

    With ``require_migrated`` (reads and writes of workflows) a database that
    is not at the head revision fails with :attr:`ExitCode.NOT_MIGRATED`
    before ``action`` runs.
    """

    async def session() -> T:
        async with Database(load_config()) as db:
            if require_migrated:
                problem = (await read_schema_status(db)).problem()
                if problem is not None:
                    raise CliError(problem, ExitCode.NOT_MIGRATED)
            return await action(db)

    with expected_errors():
        return asyncio.run(session())


def shown_url(config: DatabaseConfig) -> str:
    """The configured URL as it may be shown: the password masked."""
    return mask_url(config.url)
