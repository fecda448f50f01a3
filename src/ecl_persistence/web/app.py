"""The dashboard as an ASGI application: pages, their JSON under ``/api``, and error pages."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ecl_persistence.cli.documents import payload_size, visible
from ecl_persistence.cli.times import clock_ms, format_ms, instant_ms
from ecl_persistence.config import DatabaseConfig
from ecl_persistence.database import Database
from ecl_persistence.domain import MISSING, StepExecutionState, WorkflowState, encode_json, utc_now
from ecl_persistence.errors import ConnectionFailedError, DbError, ValidationError
from ecl_persistence.web import filters, pages
from ecl_persistence.web.charts import STATE_COLOURS, column_chart, gantt
from ecl_persistence.web.guard import Guard

__all__ = ["create_app"]

_log = logging.getLogger(__name__)
_STATIC = Path(__file__).parent / "static"


def _finalize(value: Any) -> Any:
    # Every {{ value }}: stored text shows its control characters as escapes,
    # then autoescaping makes <, >, & and quotes inert.
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value, lines=True)
    return value


def _payload(value: Any, shown: bool) -> str:
    if value is MISSING:
        return "-"
    if shown:
        return encode_json(value)
    return f"{payload_size(value):,} bytes"


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("ecl_persistence.web", "templates"),
        autoescape=True,
        finalize=_finalize,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        instant=instant_ms, clock=clock_ms, ms=format_ms, count="{:,}".format, payload=_payload
    )
    environment.globals.update(
        workflow_states=list(WorkflowState),
        step_states=list(StepExecutionState),
        colours={state.value: colour for state, colour in STATE_COLOURS.items()},
    )
    return environment


class _Failure(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def _failure_of(error: Exception) -> _Failure:
    if isinstance(error, filters.BadRequest | ValidationError):
        return _Failure(400, "Bad request", str(error))
    if isinstance(error, ConnectionFailedError):
        return _Failure(
            503, "Database unavailable", "The database cannot be reached; try again later."
        )
    if isinstance(error, DbError):
        _log.warning("a dashboard read failed: %s", type(error).__name__)
        return _Failure(503, "Database error", f"The database reported a {type(error).__name__}.")
    raise error


def create_app(
    config: DatabaseConfig,
    *,
    payloads: bool = False,
    token: str | None = None,
    hosts: Iterable[str] | None = None,
) -> Starlette:
    """The read-only dashboard over the database of ``config``.

    Every request reads in its own read-only unit of work; nothing is ever
    written. ``payloads`` shows inputs, outputs and metadata (by default only
    their sizes). With a ``token`` every request must carry it (``Bearer``, or
    as a Basic password); without one only requests whose ``Host`` is in
    ``hosts`` are answered (``None``: any, for a server you guard yourself).
    """
    templates = _environment()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.db = Database(config)
        try:
            yield
        finally:
            await app.state.db.dispose()

    def html(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        page = templates.get_template(name).render(path=request.url.path, **context)
        return HTMLResponse(page, status_code=status)

    def page(
        name: str, load: Callable[[Request, Database], Awaitable[dict[str, Any]]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            api = request.url.path.startswith("/api/")
            try:
                context = await load(request, request.app.state.db)
            except Exception as error:
                failure = _failure_of(error)
                if api:
                    return JSONResponse({"error": failure.message}, failure.status)
                return html(request, "error.html", failure.status, failure=failure)
            if api:
                return JSONResponse(context["json"])
            return html(request, name, **context)

        return endpoint

    async def listing(request: Request, db: Database) -> dict[str, Any]:
        chosen = filters.list_filters(_params(request), utc_now())
        found = await pages.load_listing(db, chosen)
        return {"listing": found, "json": pages.listing_json(found)}

    async def workflow(request: Request, db: Database) -> dict[str, Any]:
        if request.query_params:
            raise filters.BadRequest("this page takes no parameters")
        workflow_id = filters.workflow_id(request.path_params["workflow_id"])
        details = await pages.load_workflow(db, workflow_id)
        if details is None:
            raise HTTPException(404, f"there is no workflow {workflow_id}")
        tokens: dict[str, int] = {}
        for execution in details.step_executions:
            tokens[execution.step_id] = tokens.get(execution.step_id, 0) + (
                execution.tokens_used or 0
            )
        return {
            "details": details,
            "chart": gantt(details.step_executions, utc_now()),
            "tokens_by_step": tokens,
            "cost_by_model": await pages.load_cost_by_model(db, workflow_id),
            "payloads": payloads,
            "json": pages.details_json(details, payloads=payloads),
        }

    async def costs(request: Request, db: Database) -> dict[str, Any]:
        window = filters.usage_window(_params(request), utc_now())
        report = await pages.load_usage(db, window)
        by_day = column_chart([(d.day.strftime("%m-%d"), d.tokens) for d in report.by_day])
        by_definition = column_chart([(u.definition_id, u.tokens) for u in report.by_definition])
        return {
            "window": window,
            "report": report,
            "by_day": by_day,
            "by_definition": by_definition,
            "json": pages.usage_json(report),
        }

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        failure = _Failure(error.status_code, _TITLES.get(error.status_code, "Error"), error.detail)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": failure.message}, failure.status)
        return html(request, "error.html", failure.status, failure=failure)

    async def server_error(request: Request, error: Exception) -> Response:
        _log.error("the dashboard failed on %s: %s", request.url.path, type(error).__name__)
        failure = _Failure(500, "Internal error", "The dashboard failed; its log says why.")
        return html(request, "error.html", 500, failure=failure)

    app = Starlette(
        routes=[
            Route("/", page("list.html", listing)),
            Route("/workflows/{workflow_id}", page("workflow.html", workflow)),
            Route("/costs", page("costs.html", costs)),
            Route("/api/workflows", page("", listing)),
            Route("/api/workflows/{workflow_id}", page("", workflow)),
            Route("/api/usage", page("", costs)),
            Mount("/static", StaticFiles(directory=_STATIC), name="static"),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.add_middleware(Guard, token=token, hosts=hosts)
    return app


_TITLES = {404: "Not found", 405: "Method not allowed"}


def _params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        params.setdefault(name, []).append(value)
    return params
