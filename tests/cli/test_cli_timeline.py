"""`workflows show --timeline`, times to the millisecond, `list --since/--until`, stored text
shown inert in a terminal, and shell completion."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from tests.cli.helpers import Invoke, json_of, on_database
from tests.factories import StepExecutionFactory, WorkflowFactory

from ecl_persistence import Database, StepExecution, Workflow
from ecl_persistence.cli import main
from ecl_persistence.cli.documents import visible
from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.cli.timeline import CLIP_FACTOR, annotation, layout
from ecl_persistence.cli.times import parse_instant

T0 = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
HOSTILE = "[bold red]evil[/] \x1b]0;owned\x07\u202e"


def _attempt(workflow: Workflow, step: str, attempt: int, state: str, start_ms: int, ms: int,
             tokens: int | None) -> StepExecution:  # fmt: skip
    started = T0 + timedelta(milliseconds=start_ms)
    return StepExecutionFactory.build(
        workflow_id=workflow.id,
        step_id=step,
        attempt=attempt,
        state=state,
        started_at=started,
        completed_at=None if state == "running" else started + timedelta(milliseconds=ms),
        duration_ms=None if state == "running" else ms,
        tokens_used=tokens,
        error="TimeoutError: model timed out" if state == "failed" else None,
    )


def _seed(url: str, *steps: tuple[str, int, str, int, int, int | None]) -> Workflow:
    workflow = WorkflowFactory.build(definition_id="research", created_at=T0)

    async def run(db: Database) -> None:
        async with db.session() as uow:
            await uow.workflows.create(workflow)
            await uow.step_executions.create_many(_attempt(workflow, *step) for step in steps)

    on_database(url, run)
    return workflow


def _bar_rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(r"[█▒]", line)]


def test_timeline_draws_one_bar_per_attempt_in_start_order_with_duration_and_tokens(
    ecl_db: Invoke, database_url: str
) -> None:
    workflow = _seed(
        database_url,
        ("answer", 1, "succeeded", 900, 100, 7),
        ("search", 1, "failed", 0, 250, 10),
        ("search", 2, "succeeded", 300, 500, 20),
    )
    result = ecl_db("workflows", "show", str(workflow.id), "--timeline")
    assert result.exit_code == 0, result.output
    rows = _bar_rows(result.stdout)
    assert [row.split()[:3] for row in rows] == [
        ["search", "1", "+0"],
        ["search", "2", "+300"],
        ["answer", "1", "+900"],
    ]
    assert rows[0].rstrip().endswith("250 ms · 10 tokens · ✗ failed")
    assert rows[1].rstrip().endswith("500 ms · 20 tokens")
    assert rows[2].rstrip().endswith("100 ms · 7 tokens")
    # Later attempts start further right on the shared axis.
    starts = [row.index(next(c for c in row if c in "█▒")) for row in rows]
    assert starts == sorted(starts)
    assert starts[0] < starts[1] < starts[2]
    assert "0 = 2024-05-01 12:00:00.250 UTC" in result.stdout
    assert "span 1,000 ms" in result.stdout
    assert "+1.000 s" in result.stdout


def test_timeline_of_a_running_attempt_reaches_now_and_says_running(
    ecl_db: Invoke, database_url: str
) -> None:
    workflow = _seed(database_url, ("search", 1, "running", 0, 0, None))
    rows = _bar_rows(ecl_db("workflows", "show", str(workflow.id), "--timeline").stdout)
    assert len(rows) == 1
    assert "▒" in rows[0]
    assert rows[0].rstrip().endswith("… running")


def test_timeline_without_attempts_says_so(ecl_db: Invoke, database_url: str) -> None:
    workflow = _seed(database_url)
    result = ecl_db("workflows", "show", str(workflow.id), "--timeline")
    assert result.exit_code == 0
    assert "No attempts." in result.stdout
    assert _bar_rows(result.stdout) == []


def test_layout_places_bars_in_milliseconds_from_the_first_start() -> None:
    workflow = WorkflowFactory.build()
    first = _attempt(workflow, "a", 1, "succeeded", 5, 10, None)
    second = _attempt(workflow, "b", 1, "running", 20, 0, None)
    timeline = layout([first, second], now=T0 + timedelta(milliseconds=30))
    assert timeline.origin == first.started_at
    assert [(bar.start_ms, bar.end_ms, bar.open) for bar in timeline.bars] == [
        (0, 10, False),
        (15, 25, True),
    ]
    assert timeline.span_ms == 25


def test_layout_clips_a_running_attempt_that_would_squash_the_rest() -> None:
    workflow = WorkflowFactory.build()
    done = _attempt(workflow, "a", 1, "succeeded", 0, 100, None)
    stuck = _attempt(workflow, "b", 1, "running", 50, 0, None)
    timeline = layout([done, stuck], now=T0 + timedelta(days=1))
    assert timeline.span_ms == CLIP_FACTOR * 100
    assert (timeline.bars[1].end_ms, timeline.bars[1].elapsed_ms) == (200, 86_400_000 - 50)
    assert annotation(timeline.bars[1]) == "1439 min 59 s · … running"


def test_show_and_list_print_times_to_the_millisecond(ecl_db: Invoke, database_url: str) -> None:
    workflow = _seed(database_url, ("search", 1, "succeeded", 1, 5, None))
    shown = ecl_db("workflows", "show", str(workflow.id)).stdout
    assert "2024-05-01 12:00:00.250 UTC" in shown
    assert "12:00:00.251" in shown  # the attempt's start
    listed = ecl_db("workflows", "list").stdout
    assert "2024-05-01 12:00:00.250" in listed


def _created(url: str, *offsets: int) -> list[Workflow]:
    made = [WorkflowFactory.build(created_at=T0 + timedelta(hours=h)) for h in offsets]

    async def run(db: Database) -> None:
        async with db.session() as uow:
            for workflow in made:
                await uow.workflows.create(workflow)

    on_database(url, run)
    return made


def test_list_since_includes_its_instant_and_until_excludes_its_own(
    ecl_db: Invoke, database_url: str
) -> None:
    early, middle, late = _created(database_url, 0, 1, 2)
    since = (T0 + timedelta(hours=1)).isoformat()
    until = (T0 + timedelta(hours=2)).isoformat()
    document = json_of(ecl_db("workflows", "list", "--since", since, "--until", until, "--json"))
    assert [item["id"] for item in document["items"]] == [str(middle.id)]
    everything_after = json_of(ecl_db("workflows", "list", "--since", since, "--json"))
    assert [item["id"] for item in everything_after["items"]] == [str(late.id), str(middle.id)]
    recent = json_of(ecl_db("workflows", "list", "--since", "1h", "--json"))
    assert recent["items"] == [], "all three were created in 2024"
    assert len(json_of(ecl_db("workflows", "list", "--until", "1h", "--json"))["items"]) == 3
    assert str(early.id) in ecl_db("workflows", "list", "--until", "2024-05-01T13:00").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "yesterday"],
        ["--until", "2024-13-01"],
        ["--since", "7y"],
        ["--stale", "--since", "1h"],
    ],
)
def test_list_refuses_a_bad_time_with_exit_2(ecl_db: Invoke, args: list[str]) -> None:
    result = ecl_db("workflows", "list", *args)
    assert result.exit_code == ExitCode.USAGE
    assert "Traceback" not in result.output
    assert "--since" in result.stderr or "--until" in result.stderr


def test_parse_instant_reads_dates_times_offsets_and_ages() -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_instant("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_instant("2024-05-01 14:00+02:00", now) == now
    assert parse_instant(" 90s ", now) == now - timedelta(seconds=90)
    assert parse_instant("2w", now) == now - timedelta(weeks=2)
    with pytest.raises(ValueError, match="ISO 8601") as refused:
        parse_instant("<script>", now)
    assert "<script>" not in str(refused.value)


def test_stored_text_is_shown_inert_in_the_terminal(ecl_db: Invoke, database_url: str) -> None:
    workflow = _seed(database_url, (HOSTILE, 1, "failed", 0, 5, None))
    for args in ([], ["--timeline"]):
        output = ecl_db("workflows", "show", str(workflow.id), *args).stdout
        assert "\x1b" not in output
        assert "\u202e" not in output
        assert "[bold red]evil[/] \\x1b]0;" in output, "markup in stored text is not read"
    assert "\\x1b]0;owned\\x07\\u202e" in ecl_db("workflows", "show", str(workflow.id)).stdout


def test_visible_escapes_controls_and_keeps_lines_when_asked() -> None:
    assert visible("a\nb\x00\u200b") == "a\\x0ab\\x00\\u200b"
    assert visible("line 1\n\tline 2\r", lines=True) == "line 1\n\tline 2\\x0d"


def test_click_prints_a_completion_script_for_each_shell(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for shell, marker in (("bash", "complete -o nosort"), ("zsh", "compdef"), ("fish", "complete")):
        monkeypatch.setenv("_ECL_DB_COMPLETE", f"{shell}_source")
        with pytest.raises(SystemExit) as exit_info:
            main([])
        assert exit_info.value.code == 0
        script = capsys.readouterr().out
        assert marker in script
        assert "ecl-db" in script or "ecl_db" in script
