"""``ecl-db serve``: the read-only web dashboard (needs the ``web`` extra)."""

from __future__ import annotations

import click

from ecl_persistence.cli.runtime import (
    CliError,
    ExitCode,
    database_url_option,
    load_config,
    run_with_database,
    shown_url,
)

__all__ = ["MISSING_WEB_EXTRA", "serve"]

MISSING_WEB_EXTRA = "ecl-db serve needs the web extra: pip install 'ecl-persistence[web]'"
"""What ``serve`` prints, exiting with status 2, without Starlette, uvicorn or Jinja2."""


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--payloads",
    is_flag=True,
    help="Show inputs, outputs and metadata (by default only their sizes).",
)
@click.option(
    "--token",
    envvar="ECL_DB_SERVE_TOKEN",
    metavar="TOKEN",
    help="Require this bearer token (at least 16 characters); a browser asks for it as "
    "the password. Needed to listen beyond loopback. [env: ECL_DB_SERVE_TOKEN]",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Listen beyond loopback without a token: anyone who can connect reads the data.",
)
@database_url_option
def serve(host: str, port: int, payloads: bool, token: str | None, insecure_no_auth: bool) -> None:
    """Serve a read-only dashboard: workflows, timelines, attempts, tokens; JSON under /api.

    It listens on 127.0.0.1 unless told otherwise, and never writes.
    """
    try:
        from ecl_persistence.web import server
    except ImportError as error:
        if (error.name or "").partition(".")[0] not in {"starlette", "uvicorn", "jinja2"}:
            raise
        raise CliError(MISSING_WEB_EXTRA, ExitCode.USAGE) from None
    try:
        server.check_exposure(host, token, insecure_no_auth)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    config = load_config()
    try:
        run_with_database(lambda db: db.ping())
    except CliError as error:
        if error.exit_code != ExitCode.UNREACHABLE:
            raise
        click.echo(f"Warning: {error.message}; the pages say so until it answers.", err=True)
    try:
        sock = server.bind(host, port)
    except OSError as error:
        raise CliError(
            f"cannot listen on {host}:{port}: {error.strerror}", ExitCode.USAGE
        ) from None
    name, bound_port = sock.getsockname()[:2]
    shown = f"[{name}]" if ":" in name else name
    access = "token required" if token else "no token"
    click.echo(
        f"Serving {shown_url(config)} read-only on http://{shown}:{bound_port}/ "
        f"({access}; Ctrl+C stops it)."
    )
    server.serve_on(sock, config, payloads=payloads, token=token, insecure_no_auth=insecure_no_auth)
