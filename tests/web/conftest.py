"""Fixtures of the dashboard's tests: a seeded database, a live server, one real browser.

The browser is Debian's Chromium (``apt-get install chromium``), driven by
Playwright: its own browser download is not used. ``nox`` installs the
package; without it these tests fail, naming it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, async_playwright
from tests.cli.helpers import on_database
from tests.factories import REPOSITORY
from tests.web.seed import Seeded, seed

from ecl_persistence import DatabaseConfig
from ecl_persistence.web.server import bind, serve_on

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT_VARIABLE = "ECL_TEST_OUTPUT_DIR"


@attrs.frozen
class LiveServer:
    """A dashboard listening on a free loopback port, in a thread of the test process."""

    url: str
    server: uvicorn.Server


def start_server(database_url: str, *, payloads: bool = False) -> Iterator[LiveServer]:
    """Serve ``database_url`` until the generator is closed."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    servers: list[uvicorn.Server] = []
    config = DatabaseConfig(url=database_url)
    thread = threading.Thread(
        target=serve_on,
        args=(sock, config),
        kwargs={
            "payloads": payloads,
            "token": None,
            "insecure_no_auth": False,
            "configure": servers.append,
        },
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not (servers and servers[0].started):
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the dashboard did not start within 30 s", pytrace=False)
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", servers[0])
    finally:
        servers[0].should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def seeded(database_url: str) -> Seeded:
    """The test's database, seeded (see ``tests/web/seed.py``)."""
    return on_database(database_url, seed)


@pytest.fixture
def live(database_url: str, seeded: Seeded) -> Iterator[LiveServer]:
    """The dashboard over the seeded database."""
    yield from start_server(database_url)


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest) -> Path:
    """Where the browser tests write a screenshot of each page they look at.

    ``$ECL_TEST_OUTPUT_DIR/screenshots``, else ``build/test-output/screenshots``.
    """
    root = Path(os.environ.get(OUTPUT_VARIABLE) or REPOSITORY / "build" / "test-output")
    folder = root / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module's tests (Playwright's async API).

    The async API, on the module's event loop: the sync one keeps an event
    loop running in the main thread, which the database fixtures' own
    ``asyncio.run`` calls cannot share.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the browser tests need Debian's Chromium at {CHROMIUM}: "
            "`apt-get install chromium` (nox installs it when it runs as root)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
        )
        yield launched
        await launched.close()
