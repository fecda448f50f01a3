"""The dashboard in a real browser (Chromium), over a seeded database on each backend.

Each test writes a screenshot of the pages it looks at (see the
``screenshots`` fixture): ``docs/observability.md`` shows some of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import attrs
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Dialog, Page
from tests.web.conftest import LiveServer, start_server
from tests.web.seed import (
    ATTEMPTS,
    SECRET,
    TOTAL_TOKENS,
    TRACED_COST,
    XSS_DEFINITION,
    XSS_ERROR,
    XSS_MODEL,
    XSS_STEP,
    Seeded,
)

from ecl_persistence.web.charts import STATE_COLOURS

pytestmark = pytest.mark.asyncio(loop_scope="module")


@attrs.frozen
class Tab:
    """A page of the browser, the dialogs it opened, and where to save screenshots."""

    page: Page
    dialogs: list[str]
    folder: Path
    backend: str

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=self.folder / f"{name}-{self.backend}.png", full_page=True)


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser, screenshots: Path, backend: str) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    page = await context.new_page()
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    yield Tab(page, dialogs, screenshots, backend)
    await context.close()


async def _row_ids(page: Page) -> list[str]:
    return [str(v) for v in await page.locator("#workflows tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.id)"
    )]  # fmt: skip


async def test_the_list_shows_the_workflows_and_pages_through_them(
    tab: Tab, live: LiveServer, seeded: Seeded
) -> None:
    page = tab.page
    await page.goto(f"{live.url}/?limit=3")
    expected = [str(w.id) for w in seeded.newest_first]
    assert await _row_ids(page) == expected[:3]
    counts = page.locator("#counts li")
    assert await counts.locator("[data-state]").count() == 0
    assert await page.locator('#counts li[data-state="total"] strong').inner_text() == "7"
    assert await page.locator('#counts li[data-state="failed"] strong').inner_text() == "1"
    await tab.shot("list")
    await page.click("#next-page")
    assert await _row_ids(page) == expected[3:6]
    await page.click("#next-page")
    assert await _row_ids(page) == expected[6:]
    assert await page.locator("#next-page").count() == 0
    await page.click("#first-page")
    assert await _row_ids(page) == expected[:3]


async def test_the_filters_narrow_the_list(tab: Tab, live: LiveServer, seeded: Seeded) -> None:
    page = tab.page
    await page.goto(live.url)
    await page.select_option("select[name=state]", "running")
    await page.click("button[type=submit]")
    assert await _row_ids(page) == [str(seeded.traced.id)]
    assert "state=running" in page.url
    since = quote(seeded.traced.created_at.isoformat())
    await page.goto(f"{live.url}/?definition=research&since={since}")
    assert await _row_ids(page) == [str(seeded.traced.id)]


async def test_a_workflow_page_draws_one_bar_per_attempt_coloured_by_state(
    tab: Tab, live: LiveServer, seeded: Seeded
) -> None:
    page = tab.page
    await page.goto(f"{live.url}/workflows/{seeded.traced.id}")
    bars = await page.locator("#gantt g.attempt").evaluate_all(
        """groups => groups.map(g => {
            const rect = g.querySelector('rect.bar');
            return [g.dataset.step, Number(g.dataset.attempt), g.dataset.state,
                    rect.getAttribute('fill'), rect.getBBox().x, rect.getBBox().width];
        })"""
    )
    by_start = sorted(ATTEMPTS, key=lambda attempt: attempt[3])
    assert [(step, attempt, state.value) for step, attempt, state, *_ in by_start] == [
        (step, attempt, state) for step, attempt, state, *_ in bars
    ]
    assert [fill for *_, fill, _x, _w in bars] == [
        STATE_COLOURS[state] for _s, _a, state, *_ in by_start
    ]
    xs = [x for *_, x, _w in bars]
    assert xs == sorted(xs), "bars start left to right"
    assert len(set(xs)) == len(xs)
    widths = dict(zip([(s, a) for s, a, *_ in bars], [w for *_, w in bars], strict=True))
    assert widths[("search", 2)] == pytest.approx(2 * widths[("search", 1)], rel=0.02)
    assert await page.locator("#attempts tbody tr").count() == len(ATTEMPTS)
    assert "250 ms · 10 tokens · ✗ failed" in (await page.locator("#gantt").text_content() or "")
    assert await page.locator("#artifacts").inner_text() != ""
    by_model = await page.locator("#cost-by-model tbody tr").all_inner_texts()
    assert [row.split("\t")[0] for row in by_model] == [XSS_MODEL, "model-a", "(none)"]
    assert str(TRACED_COST) in await page.locator("#total-cost").inner_text()
    assert SECRET not in await page.content(), "payloads stay hidden without --payloads"
    await tab.shot("workflow")
    await page.click('#gantt g.attempt[data-state="failed"]')
    assert page.url.endswith("#attempt-1")


async def test_the_costs_page_charts_the_seeded_tokens(
    tab: Tab, live: LiveServer, seeded: Seeded
) -> None:
    page = tab.page
    await page.goto(f"{live.url}/costs")
    assert await page.locator("#total-tokens").inner_text() == f"{TOTAL_TOKENS:,}"
    for chart in ("#tokens-by-day", "#tokens-by-definition"):
        total = await page.locator(chart).get_attribute("data-total")
        values = await page.locator(f"{chart} g.column").evaluate_all(
            "columns => columns.map(c => Number(c.dataset.value))"
        )
        assert total == str(TOTAL_TOKENS)
        assert sum(values) == TOTAL_TOKENS
    definitions = await page.locator("#definitions tbody tr td:first-child").all_inner_texts()
    assert definitions == [XSS_DEFINITION, "research"], "most tokens first"
    # The ledger by model: a hostile model name shown as text, costs exact, no model last.
    models = await page.locator("#cost-by-model tbody tr td:first-child").all_inner_texts()
    assert models == [XSS_MODEL, "model-a", "(none)"]
    costs = await page.locator("#cost-by-model tbody tr td:last-child").all_inner_texts()
    assert costs == ["-", str(TRACED_COST), "-"]
    assert str(TRACED_COST) in await page.locator("#total-cost").inner_text()
    assert await page.locator("#cost-placeholder").count() == 0
    await tab.shot("costs")


async def test_hostile_text_is_shown_literally_and_never_runs(
    tab: Tab, live: LiveServer, seeded: Seeded
) -> None:
    page = tab.page
    await page.goto(f"{live.url}/workflows/{seeded.hostile.id}")
    assert await page.locator("#attempts .step-id").inner_text() == XSS_STEP
    error = await page.locator("#attempts tbody tr td").nth(10).inner_text()
    assert error == "<script>alert('error')</script> \\x1b[31m\\u202egnp.exe"
    assert XSS_ERROR not in await page.content()
    assert await page.locator("img, script").count() == 0
    assert XSS_STEP in (await page.locator("#gantt").text_content() or "")
    await tab.shot("hostile")
    await page.goto(live.url)
    assert XSS_DEFINITION in await page.locator("#workflows").inner_text()
    await page.goto(f"{live.url}/costs")
    assert tab.dialogs == [], "no script of the stored text ran"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?state=paused", "state must be one of"),
        ("?limit=0", "limit must be a whole number"),
        ("?since=yesterday", "since: expected an ISO 8601"),
        ("?cursor=forged", "cursor is not one this package issued"),
        ("?colour=red", "unknown parameter 'colour'"),
    ],
)
async def test_a_bad_filter_shows_the_400_page(
    tab: Tab, live: LiveServer, query: str, message: str
) -> None:
    response = await tab.page.goto(f"{live.url}/{query}")
    assert response is not None
    assert response.status == 400
    assert await tab.page.locator("#error-title").inner_text() == "400 Bad request"
    assert message in await tab.page.locator("#error-message").inner_text()
    assert "Traceback" not in await tab.page.content()
    if query == "?state=paused":
        await tab.shot("bad-filter")


async def test_a_database_that_is_down_gives_the_503_page(
    tab: Tab, backend: str, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path}/no-such-directory/ecl.db"
        if backend == "sqlite"
        else "postgresql://postgres@127.0.0.1:9/ecl"
    )
    for live in start_server(url):
        response = await tab.page.goto(live.url)
        assert response is not None
        assert response.status == 503
        assert await tab.page.locator("#error-title").inner_text() == "503 Database unavailable"
        await tab.shot("database-down")
