"""Configuration: URL normalisation, password masking, settings from the environment."""

from __future__ import annotations

import pytest

from ecl_persistence import Database, DatabaseConfig, ValidationError
from ecl_persistence.config import DEFAULT_URL, mask_url, normalize_url

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///./ecl.db", "sqlite+aiosqlite:///./ecl.db"),
        ("sqlite:////abs/path.db", "sqlite+aiosqlite:////abs/path.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite:///:memory:", "sqlite+aiosqlite://"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_plain_urls_map_to_the_async_drivers(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://root:{SECRET}@localhost/db",
        f"postgresql+psycopg2://u:{SECRET}@h/db",
        f"oracle://u:{SECRET}@h/db",
    ],
)
def test_unknown_scheme_is_refused_naming_the_scheme_not_the_password(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DatabaseConfig(url=url)
    assert url.split("://")[0] in str(caught.value)
    assert SECRET not in str(caught.value)


def test_unparsable_url_is_refused_without_echoing_it() -> None:
    url = f"postgresql://user:{SECRET}@host:notaport/db"
    with pytest.raises(ValidationError) as caught:
        DatabaseConfig(url=url)
    assert SECRET not in str(caught.value)
    assert "postgresql" in str(caught.value)


def test_repr_of_config_and_database_hides_the_password() -> None:
    config = DatabaseConfig(url=f"postgresql://user:{SECRET}@db.internal/ecl")
    assert SECRET not in repr(config)
    assert "***" in repr(config)
    assert SECRET not in repr(Database(config))
    assert SECRET not in mask_url(config.url)


def test_mask_url_of_garbage_does_not_echo_it() -> None:
    assert SECRET not in mask_url(f"postgresql://u:{SECRET}@h:port/x")


def test_defaults_are_the_embedded_sqlite_file() -> None:
    config = DatabaseConfig()
    assert config.url == DEFAULT_URL
    assert config.dialect == "sqlite"
    assert not config.is_memory
    assert DatabaseConfig(url="sqlite://").is_memory


def test_from_env_reads_the_documented_variables() -> None:
    config = DatabaseConfig.from_env(
        {
            "ECL_DATABASE_URL": "postgresql://u@h/db",
            "DATABASE_URL": "sqlite:///ignored.db",
            "ECL_DB_MAX_CONNECTIONS": "12",
            "ECL_DB_TIMEOUT_SECS": "7.5",
        }
    )
    assert config.url == "postgresql://u@h/db"
    assert config.max_connections == 12
    assert config.timeout_secs == 7.5


def test_from_env_falls_back_to_database_url_then_the_default() -> None:
    assert DatabaseConfig.from_env({"DATABASE_URL": "sqlite:///d.db"}).url == "sqlite:///d.db"
    assert DatabaseConfig.from_env({}).url == DEFAULT_URL


def test_from_env_uses_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECL_DATABASE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("ECL_DB_MAX_CONNECTIONS", "3")
    assert DatabaseConfig.from_env().url == "sqlite:///from-env.db"
    assert Database.from_env().config.max_connections == 3


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ECL_DB_MAX_CONNECTIONS", "abc"),
        ("ECL_DB_MAX_CONNECTIONS", "0"),
        ("ECL_DB_MAX_CONNECTIONS", "-3"),
        ("ECL_DB_TIMEOUT_SECS", "soon"),
        ("ECL_DB_TIMEOUT_SECS", "0"),
        ("ECL_DB_TIMEOUT_SECS", "nan"),
        ("ECL_DB_TIMEOUT_SECS", "inf"),
        ("ECL_DATABASE_URL", "ftp://example/x"),
    ],
)
def test_from_env_refuses_bad_values_naming_the_setting(variable: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DatabaseConfig.from_env({variable: value})
    message = str(caught.value)
    setting = variable.removeprefix("ECL_DB_").lower()
    assert variable in message or setting in message or "ftp" in message


@pytest.mark.parametrize(
    "fields",
    [
        {"max_connections": True},
        {"max_connections": 2.5},
        {"timeout_secs": -1},
        {"timeout_secs": "3"},
        {"echo": "yes"},
        {"max_payload_bytes": 0},
        {"url": 42},
    ],
)
def test_config_fields_are_validated(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DatabaseConfig(**fields)  # type: ignore[arg-type]
