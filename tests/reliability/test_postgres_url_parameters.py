"""libpq's URL parameters: TLS for real, the others mapped, anything else refused by name.

The TLS tests run against a throwaway cluster of the suite's own with TLS
required (``hostssl`` only) and a certificate the test made; ``pg_stat_ssl``
says whether a session is encrypted.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from tests.cli.helpers import invoke
from tests.support.pg_cluster import Cluster

from ecl_persistence import ConnectionFailedError, Database, DatabaseConfig, ValidationError
from ecl_persistence.dialects._libpq import connect_arguments

pytestmark = pytest.mark.postgresql

SECRET = "Url-Param-Secret"


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[Cluster]:
    """A cluster that refuses TCP connections without TLS."""
    with Cluster(ssl=True, ssl_required=True) as cluster:
        yield cluster


async def _session_facts(url: str, **config: Any) -> dict[str, Any]:
    """What the server says about the session a ping-like unit of work gets."""
    async with Database.from_url(url, **config) as db, db.session(read_only=True) as uow:
        row = (
            await uow.execute(
                text(
                    "SELECT s.ssl, a.application_name, current_setting('search_path'), "
                    "current_setting('statement_timeout') FROM pg_stat_ssl s "
                    "JOIN pg_stat_activity a ON a.pid = s.pid WHERE s.pid = pg_backend_pid()"
                ),
                action="read the session",
            )
        ).one()
    return dict(
        zip(("ssl", "application_name", "search_path", "statement_timeout"), row, strict=True)
    )


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
async def test_sslmode_connects_over_tls(tls_cluster: Cluster, mode: str) -> None:
    query = {"sslmode": mode}
    if mode != "require":
        query["sslrootcert"] = str(tls_cluster.ca_path)
    facts = await _session_facts(tls_cluster.url(**query))
    assert facts["ssl"] is True


async def test_prefer_and_allow_use_tls_when_the_server_offers_it(tls_cluster: Cluster) -> None:
    for mode in ("prefer", "allow"):
        assert (await _session_facts(tls_cluster.url(sslmode=mode)))["ssl"] is True, mode


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
async def test_a_server_the_root_certificate_does_not_vouch_for_is_refused(
    tls_cluster: Cluster, mode: str
) -> None:
    url = tls_cluster.url(sslmode=mode, sslrootcert=str(tls_cluster.wrong_ca_path))
    async with Database.from_url(url, timeout_secs=10) as db:
        with pytest.raises(ConnectionFailedError) as caught:
            await db.ping()
    error = caught.value
    assert not error.retryable
    assert f"127.0.0.1:{tls_cluster.port}" in str(error)
    assert "over TLS" in str(error)
    assert "sslrootcert" in str(error)


def test_verify_full_checks_the_name_of_the_server_and_verify_ca_does_not(
    tls_cluster: Cluster,
) -> None:
    # Only 127.0.0.1 answers, and the certificate names it: the names are read
    # from what the URL asks of the TLS context.
    for mode, names in (("verify-full", True), ("verify-ca", False), ("require", False)):
        url = tls_cluster.url(sslmode=mode, sslrootcert=str(tls_cluster.ca_path))
        context = connect_arguments(DatabaseConfig(url=url).async_url).ssl
        assert isinstance(context, ssl.SSLContext), mode
        assert context.verify_mode == ssl.CERT_REQUIRED, mode
        assert context.check_hostname is names, mode
    bare = connect_arguments(DatabaseConfig(url=tls_cluster.url(sslmode="require")).async_url)
    assert isinstance(bare.ssl, ssl.SSLContext)
    assert bare.ssl.verify_mode == ssl.CERT_NONE


async def test_sslmode_disable_is_refused_by_a_server_that_requires_tls(
    tls_cluster: Cluster,
) -> None:
    async with Database.from_url(tls_cluster.url(sslmode="disable")) as db:
        with pytest.raises(ConnectionFailedError) as caught:
            await db.ping()
    assert not caught.value.retryable


async def test_the_other_libpq_parameters_reach_the_session(tls_cluster: Cluster) -> None:
    url = tls_cluster.url(
        sslmode="require",
        connect_timeout="5",
        application_name="ecl-worker-7",
        options="-c search_path=public,pg_catalog -cstatement_timeout=4500",
        target_session_attrs="read-write",
    )
    facts = await _session_facts(url)
    assert facts == {
        "ssl": True,
        "application_name": "ecl-worker-7",
        "search_path": "public,pg_catalog",
        "statement_timeout": "4500ms",
    }


async def test_connect_timeout_bounds_the_wait_and_is_named(silent_port: int) -> None:
    url = f"postgresql://ecl@127.0.0.1:{silent_port}/ecl?connect_timeout=0.3"
    async with Database.from_url(url, timeout_secs=30) as db:
        with pytest.raises(ConnectionFailedError) as caught:
            async with asyncio.timeout(10):
                await db.ping()
    assert "no answer within 0.3 s" in str(caught.value)
    assert "connect_timeout" in str(caught.value)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        (f"sslpassword={SECRET}", "'sslpassword'"),
        (f"keepalives={SECRET}", "'keepalives'"),
        (f"sslmode={SECRET}", "sslmode must be one of"),
        (f"connect_timeout={SECRET}", "connect_timeout must be a positive number"),
        ("connect_timeout=0", "connect_timeout must be a positive number"),
        (f"options=-x%20{SECRET}", "options: only -c name=value"),
        (f"target_session_attrs={SECRET}", "target_session_attrs must be one of"),
        ("sslmode=prefer&sslcert=/c.pem", "sslcert and sslkey need sslmode=require"),
        (f"sslmode=verify-full&sslrootcert=/nonexistent/{SECRET}.crt", "sslrootcert: cannot read"),
    ],
)
def test_a_parameter_not_understood_is_refused_naming_it_never_its_value(
    query: str, named: str
) -> None:
    url = f"postgresql://ecl:pw@127.0.0.1:1/ecl?{query}"
    with pytest.raises(ValidationError) as caught:
        Database.from_url(url)
    assert named in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_configuration_refuses_an_unknown_parameter_before_any_engine() -> None:
    with pytest.raises(ValidationError, match="'sslcompression'"):
        DatabaseConfig(url="postgresql://ecl@db.example/ecl?sslcompression=1")


def test_the_command_line_takes_sslmode_and_refuses_the_unknown_in_one_line(
    tls_cluster: Cluster,
) -> None:
    # In process: an exception the command did not expect would propagate here.
    database = tls_cluster.url(sslmode="require")
    migrated = invoke(["migrate"], url=database)
    assert migrated.exit_code == 0, migrated.output
    checked = invoke(["check"], url=database)
    assert checked.exit_code == 0, checked.output
    refused = invoke(["check"], url=f"{database}&sslpassword={SECRET}")
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "'sslpassword'" in refused.stderr
    assert SECRET not in refused.output


@pytest.mark.parametrize(
    ("options", "settings"),
    [
        ("-c search_path=a", {"search_path": "a"}),
        ("-csearch_path=a --statement-timeout=5s", {"search_path": "a", "statement_timeout": "5s"}),
        (r"-c application_name=two\ words", {"application_name": "two words"}),
    ],
)
def test_options_take_every_spelling_of_a_setting(options: str, settings: dict[str, str]) -> None:
    url = DatabaseConfig(url="postgresql://ecl@db.example/ecl").async_url
    assert connect_arguments(url.update_query_dict({"options": options})).server_settings == (
        settings
    )


def test_a_client_certificate_is_loaded_and_its_key_needs_the_certificate(
    tls_cluster: Cluster,
) -> None:
    # The server's own pair stands in for a client's: only loading it is checked here.
    tls = tls_cluster.ca_path.parent
    query = {"sslmode": "verify-full", "sslrootcert": str(tls_cluster.ca_path)}
    with_pair = tls_cluster.url(
        **query, sslcert=str(tls / "server.crt"), sslkey=str(tls / "server.key")
    )
    assert isinstance(
        connect_arguments(DatabaseConfig(url=with_pair).async_url).ssl, ssl.SSLContext
    )
    with pytest.raises(ValidationError, match="sslkey needs sslcert"):
        Database.from_url(tls_cluster.url(**query, sslkey=str(tls / "server.key")))
    with pytest.raises(ValidationError, match="cannot read the client certificate"):
        Database.from_url(tls_cluster.url(**query, sslcert=str(tls / "missing.crt")))
