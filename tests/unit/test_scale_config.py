"""The scale-out settings: PgBouncer, the listener's URL, the read replica."""

from __future__ import annotations

import pytest

from ecl_persistence import DatabaseConfig, ValidationError
from ecl_persistence.dialects import _libpq

PG = "postgresql://app:s3cret@db.example/ecl"


def test_pgbouncer_comes_from_the_field_or_the_url() -> None:
    assert not DatabaseConfig(url=PG).pgbouncer
    assert DatabaseConfig(url=PG, pgbouncer=True).pgbouncer
    config = DatabaseConfig(url=f"{PG}?pgbouncer=true")
    assert config.pgbouncer
    assert "pgbouncer" not in _libpq.connect_arguments(config.async_url).url.query
    assert not DatabaseConfig(url=f"{PG}?pgbouncer=0").pgbouncer
    with pytest.raises(ValidationError, match="pgbouncer parameter must be true or false"):
        DatabaseConfig(url=f"{PG}?pgbouncer=maybe")


def test_pgbouncer_refuses_session_options_that_pooling_would_lose() -> None:
    with pytest.raises(ValidationError, match="transaction pooling loses"):
        DatabaseConfig(url=f"{PG}?options=-c%20statement_timeout%3D5s", pgbouncer=True)
    assert DatabaseConfig(url=f"{PG}?options=-c%20statement_timeout%3D5s").async_url


def test_the_replica_and_listen_urls_are_postgresql_and_masked() -> None:
    config = DatabaseConfig(url=PG, replica_url=PG.replace("db.", "replica."), listen_url=PG)
    assert config.replica_async_url is not None
    assert config.replica_async_url.host == "replica.example"
    assert "s3cret" not in repr(config)
    with pytest.raises(ValidationError, match="replica_url must be a PostgreSQL URL"):
        DatabaseConfig(url=PG, replica_url="sqlite:///x.db")
    with pytest.raises(ValidationError, match="listen_url must be a string"):
        DatabaseConfig(url=PG, listen_url=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [{"pgbouncer": True}, {"listen_url": PG}, {"replica_url": PG}],
    ids=["pgbouncer", "listen_url", "replica_url"],
)
def test_sqlite_has_none_of_them(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="needs PostgreSQL"):
        DatabaseConfig(url="sqlite:///x.db", **fields)  # type: ignore[arg-type]


def test_the_environment_sets_them() -> None:
    config = DatabaseConfig.from_env(
        {
            "ECL_DATABASE_URL": PG,
            "ECL_DB_PGBOUNCER": "true",
            "ECL_DB_LISTEN_URL": PG.replace("db.", "direct."),
            "ECL_DB_REPLICA_URL": PG.replace("db.", "replica."),
        }
    )
    assert config.pgbouncer
    assert config.listen_async_url is not None
    assert config.listen_async_url.host == "direct.example"
    assert config.replica_async_url is not None
    assert not DatabaseConfig.from_env({"ECL_DATABASE_URL": PG, "ECL_DB_PGBOUNCER": "0"}).pgbouncer
    with pytest.raises(ValidationError, match="ECL_DB_PGBOUNCER"):
        DatabaseConfig.from_env({"ECL_DATABASE_URL": PG, "ECL_DB_PGBOUNCER": "sometimes"})
