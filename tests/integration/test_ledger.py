"""The token and cost ledger: usage, model and cost per attempt, prices, the ledger, budgets.

On both backends: round trips (exact ``Decimal`` at the smallest and the
largest amounts, and sums of them), partial usage on a failed attempt, the
ledger grouped each way against sums computed in Python over the same rows,
costs from a price book, a budget refusing a step, and hostile values refused
with nothing written.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from tests.factories import (
    StepExecutionFactory,
    WorkflowFactory,
    at,
    create_workflows,
    snapshot,
    stored_step_execution,
    stored_workflow,
)

from ecl_persistence import (
    BudgetExceededError,
    Database,
    DbError,
    Price,
    PriceBook,
    StepExecution,
    StepExecutionState,
    StepRecorder,
    StepRecording,
    TokenUsage,
    UsageRow,
    ValidationError,
    Worker,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import JsonValue

S = StepExecutionState
TINY = Decimal("0.000001")
HUGE = Decimal("999999999999.999999")
PRICES = PriceBook(
    {
        "model-a": Price(Decimal("3"), Decimal("15"), cached_per_mtok=Decimal("0.3")),
        "model-b": Price(1, 2, reasoning_per_mtok=Decimal("4.5")),
    }
)


def _execution(workflow: Workflow, n: int, **fields: Any) -> StepExecution:
    fields.setdefault("started_at", at(n))
    return StepExecutionFactory.build(workflow_id=workflow.id, step_id=f"s{n}", **fields)


async def _reread(db: Database, execution: StepExecution) -> StepExecution:
    return await stored_step_execution(db, execution.id)


async def test_usage_model_and_cost_round_trip_exactly(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    usage = TokenUsage(2**40, 7, 2**41, 3)
    tiny = _execution(workflow, 1, usage=usage, model="model-ü 🌊", cost=TINY)
    huge = _execution(workflow, 2, cost=HUGE)
    plain = _execution(workflow, 3, tokens_used=12)
    async with db.session() as uow:
        await uow.step_executions.create(tiny)
        await uow.step_executions.create_many([huge, plain])
    assert await _reread(db, tiny) == tiny
    stored = await _reread(db, tiny)
    assert (stored.usage, stored.model, stored.cost) == (usage, "model-ü 🌊", TINY)
    assert stored.tokens_used == usage.total == 2**40 + 2**41 + 10
    assert type(stored.cost) is Decimal
    assert (await _reread(db, huge)).cost == HUGE
    assert (await _reread(db, plain)).usage is None
    assert (await _reread(db, plain)).tokens_used == 12
    async with db.session(read_only=True) as uow:
        stats = await uow.step_executions.get_stats(workflow.id)
        (total,) = await uow.step_executions.usage(workflow_id=workflow.id)
    assert stats.total_cost == HUGE + TINY == Decimal("1000000000000.000000")
    assert total.cost == HUGE + TINY
    assert (total.attempts, total.recorded, total.cached_tokens) == (3, 1, 2**41)


async def test_large_sums_of_costs_stay_exact(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    costs = [HUGE, TINY, Decimal("123456789.123456"), HUGE, Decimal("0.999999")] * 20
    async with db.session() as uow:
        await uow.step_executions.create_many(
            _execution(workflow, n, cost=cost) for n, cost in enumerate(costs)
        )
        stats = await uow.step_executions.get_stats(workflow.id)
    expected = sum(costs, Decimal(0))
    assert expected * 10**6 > 2**63, "past what a 64-bit sum of millionths holds"
    assert stats.total_cost == expected
    async with db.session(read_only=True) as uow:
        (row,) = await uow.step_executions.usage(workflow_id=workflow.id)
    assert row.cost == expected


async def test_update_completion_stores_usage_and_a_failed_attempt_keeps_it(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    first, second = _execution(workflow, 1), _execution(workflow, 2)
    async with db.session() as uow:
        await uow.step_executions.create_many([first, second])
        failed = await uow.step_executions.update_completion(
            first.id,
            S.FAILED,
            error="TimeoutError",
            usage=TokenUsage(input_tokens=900),
            model="model-a",
            cost=Decimal("0.0027"),
        )
        done = await uow.step_executions.update_completion(
            second.id, S.SUCCEEDED, output={"ok": True}, usage=TokenUsage(10, 20)
        )
    assert (failed.state, failed.usage, failed.cost) == (
        S.FAILED,
        TokenUsage(900),
        Decimal("0.0027"),
    )
    assert await _reread(db, first) == failed
    assert failed.tokens_used == 900
    # No model, no price book: the cost stays empty.
    assert (done.usage, done.model, done.cost, done.tokens_used) == (
        TokenUsage(10, 20),
        None,
        None,
        30,
    )


async def test_the_recorder_keeps_the_usage_of_a_step_that_failed(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    recorder = StepRecorder(db, price_book=PRICES)
    with pytest.raises(TimeoutError):
        async with recorder.step(workflow.id, "answer", {"q": 1}) as rec:
            rec.usage = TokenUsage(input_tokens=1_000_000, cached_tokens=1_000_000)
            rec.model = "model-a"
            raise TimeoutError("the model timed out after reading the prompt")
    (attempt,) = await _attempts(db, workflow)
    assert attempt.state is S.FAILED
    assert attempt.usage == TokenUsage(input_tokens=1_000_000, cached_tokens=1_000_000)
    assert attempt.cost == Decimal("3.3")  # 3 per Mtok of input, 0.3 per Mtok cached


async def _attempts(db: Database, workflow: Workflow) -> list[StepExecution]:
    async with db.session(read_only=True) as uow:
        return await uow.step_executions.get_for_workflow(workflow.id)


async def test_a_price_book_fills_in_the_cost_and_a_missing_model_leaves_it_empty(
    database_url: str,
) -> None:
    workflow = WorkflowFactory.build()
    async with Database.from_url(database_url, price_book=PRICES) as db:
        await create_workflows(db, workflow)
        usage = TokenUsage(
            input_tokens=2000, output_tokens=1000, cached_tokens=10_000, reasoning_tokens=100
        )
        priced = _execution(workflow, 1, usage=usage, model="model-a")
        unknown = _execution(workflow, 2, usage=usage, model="model-z")
        given = _execution(workflow, 3, usage=usage, model="model-a", cost=Decimal("9"))
        later = _execution(workflow, 4)
        async with db.session() as uow:
            await uow.step_executions.create(priced)
            await uow.step_executions.create_many([unknown, given, later])
            finished = await uow.step_executions.update_completion(
                later.id, S.SUCCEEDED, usage=TokenUsage(0, 0, 0, 1_000_000), model="model-b"
            )
        assert (await _reread(db, priced)).cost == PRICES["model-a"].cost(usage)
        # 2000 * 3 + 1000 * 15 + 10000 * 0.3 + 100 * 15 (reasoning at the output price), per Mtok
        assert PRICES["model-a"].cost(usage) == Decimal("0.025500")
        assert (await _reread(db, unknown)).cost is None
        assert (await _reread(db, given)).cost == Decimal("9")
        assert finished.cost == Decimal("4.5")
    assert PriceBook().cost("model-a", usage) is None
    assert PRICES.cost(None, usage) is None
    assert PRICES.cost("model-a", None) is None


def _python_ledger(
    rows: list[tuple[Workflow, StepExecution]], key: Callable[[Workflow, StepExecution], Any]
) -> list[UsageRow]:
    groups: dict[Any, list[StepExecution]] = defaultdict(list)
    for workflow, execution in rows:
        groups[key(workflow, execution)].append(execution)
    result = []
    for group in sorted(groups, key=lambda k: (k is None, k or "")):
        executions = groups[group]
        used = [e.usage for e in executions if e.usage is not None]
        costs = [e.cost for e in executions if e.cost is not None]
        result.append(
            UsageRow(
                key=group,
                attempts=len(executions),
                recorded=len(used),
                input_tokens=sum(u.input_tokens for u in used),
                output_tokens=sum(u.output_tokens for u in used),
                cached_tokens=sum(u.cached_tokens for u in used),
                reasoning_tokens=sum(u.reasoning_tokens for u in used),
                cost=sum(costs, Decimal(0)) if costs else None,
            )
        )
    return result


async def test_the_ledger_grouped_each_way_matches_sums_over_the_same_rows(db: Database) -> None:
    rng = random.Random(16)
    workflows = [WorkflowFactory.build(definition_id=f"def-{n % 3}") for n in range(6)]
    await create_workflows(db, *workflows)
    rows: list[tuple[Workflow, StepExecution]] = []
    for n in range(90):
        workflow = workflows[n % len(workflows)]
        usage = None if n % 5 == 0 else TokenUsage(*(rng.randrange(0, 10**9) for _ in range(4)))
        model = (None, "model-a", "model-b", "zeta")[n % 4]
        cost = None if n % 3 == 0 else Decimal(rng.randrange(0, 10**15)).scaleb(-6)
        # Spread over four UTC days, around midnight.
        started = at(0) + timedelta(hours=n * 1.1)
        rows.append(
            (
                workflow,
                _execution(workflow, n, started_at=started, usage=usage, model=model, cost=cost),
            )
        )
    async with db.session() as uow:
        await uow.step_executions.create_many(execution for _w, execution in rows)
    groupings: dict[str | None, Callable[[Workflow, StepExecution], Any]] = {
        None: lambda w, e: None,
        "model": lambda w, e: e.model,
        "definition": lambda w, e: w.definition_id,
        "day": lambda w, e: e.started_at.date().isoformat(),
    }
    async with db.session(read_only=True) as uow:
        for group_by, key in groupings.items():
            ledger = await uow.step_executions.usage(group_by=group_by)  # type: ignore[arg-type]
            assert ledger == _python_ledger(rows, key), group_by
        assert len(await uow.step_executions.usage(group_by="day")) >= 4
        # Filters: a window of started_at (since inclusive, until exclusive), a definition.
        since, until = rows[10][1].started_at, rows[50][1].started_at
        window = [(w, e) for w, e in rows if since <= e.started_at < until]
        assert await uow.step_executions.usage(since=since, until=until, group_by="model") == (
            _python_ledger(window, groupings["model"])
        )
        of_def = [(w, e) for w, e in rows if w.definition_id == "def-1"]
        assert await uow.step_executions.usage(definition_id="def-1", group_by="day") == (
            _python_ledger(of_def, groupings["day"])
        )
        one = workflows[2]
        assert await uow.step_executions.usage(workflow_id=str(one.id)) == _python_ledger(
            [(w, e) for w, e in rows if w.id == one.id], groupings[None]
        )
        assert await uow.step_executions.usage(definition_id="nothing") == []
        assert await uow.step_executions.usage(group_by="model", definition_id="nothing") == []


@pytest.mark.parametrize(
    "bad",
    [
        {"group_by": "week"},
        {"since": at(0).replace(tzinfo=None)},
        {"until": "yesterday"},
        {"workflow_id": "not-a-uuid"},
        {"definition_id": ""},
    ],
)
async def test_the_ledger_refuses_bad_arguments(db: Database, bad: dict[str, Any]) -> None:
    async with db.session(read_only=True) as uow:
        with pytest.raises(ValidationError):
            await uow.step_executions.usage(**bad)


HOSTILE_USAGE: list[Callable[[], object]] = [
    lambda: TokenUsage(input_tokens=-1),
    lambda: TokenUsage(output_tokens=2**63),
    lambda: TokenUsage(cached_tokens=1.5),  # type: ignore[arg-type]
    lambda: TokenUsage(reasoning_tokens=True),
    lambda: TokenUsage(input_tokens="12"),  # type: ignore[arg-type]
    lambda: TokenUsage(2**62, 2**62),  # each fits, the total does not
    lambda: Price(Decimal("-1"), 1),
    lambda: Price(1.5, 1),
    lambda: Price(Decimal("NaN"), 1),
    lambda: PriceBook({"": Price(1, 1)}),
    lambda: PriceBook({"m": 3}),  # type: ignore[dict-item]
]


@pytest.mark.parametrize("make", HOSTILE_USAGE)
def test_hostile_usage_values_and_prices_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValidationError):
        make()


HOSTILE_FIELDS: list[dict[str, Any]] = [
    {"model": ""},
    {"model": "m\x00odel"},
    {"model": "x" * 256},
    {"model": 42},
    {"model": "\ud800"},
    {"cost": Decimal("-0.000001")},
    {"cost": Decimal("0.0000001")},
    {"cost": Decimal("1e12")},
    {"cost": Decimal("Infinity")},
    {"cost": Decimal("NaN")},
    {"cost": 0.1},
    {"cost": "1.00"},
    {"usage": {"input_tokens": 1}},
    {"usage": 12},
]


@pytest.mark.parametrize("fields", HOSTILE_FIELDS)
async def test_hostile_models_costs_and_usages_raise_validation_error_and_write_nothing(
    db: Database, fields: dict[str, Any]
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    with pytest.raises(ValidationError):
        _execution(workflow, 1, **fields)
    running = _execution(workflow, 2)
    async with db.session() as uow:
        await uow.step_executions.create(running)
    before = await snapshot(db)
    with pytest.raises(ValidationError) as refused:
        async with db.session() as uow:
            await uow.step_executions.update_completion(running.id, S.SUCCEEDED, **fields)
    assert await snapshot(db) == before
    assert "\x00" not in str(refused.value)
    assert "x" * 256 not in str(refused.value)
    recording = StepRecording(running, 1000)
    ((name, value),) = fields.items()
    with pytest.raises(ValidationError):
        setattr(recording, name, value)


async def _fail_then_succeed(rec: StepRecording) -> JsonValue:
    rec.model = "model-a"
    rec.usage = TokenUsage(input_tokens=1_000_000)  # 3 at model-a's price
    return {"ok": True}


async def test_a_step_over_budget_is_refused_and_recorded_in_the_audit_trail(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    calls: list[int] = []

    async def spend(rec: StepRecording) -> JsonValue:
        calls.append(rec.attempt)
        return await _fail_then_succeed(rec)

    worker = Worker(db, "w1", poll_seconds=0.05, price_book=PRICES)
    async for run in worker.runs(until_idle=True):
        async with run:
            await run.step("one", {}, spend, max_cost=Decimal("5"))
            await run.step("two", {}, spend, max_cost=Decimal("5"))  # spent 3 < 5: runs
            await run.step("three", {}, spend, max_cost=Decimal("6"))  # spent 6: refused
    assert len(calls) == 2
    stored = await stored_workflow(db, workflow.id)
    assert stored.state is WorkflowState.FAILED
    assert "BudgetExceededError" in (stored.error or "")
    async with db.session(read_only=True) as uow:
        history = await uow.workflows.history(workflow.id)
        steps = await uow.step_executions.get_for_workflow(workflow.id)
    assert history[-1].to_state is WorkflowState.FAILED
    assert "spent 6.000000 of a budget of 6" in (history[-1].reason or "")
    assert [e.step_id for e in steps] == ["one", "two"], "no attempt of the refused step"
    assert not issubclass(BudgetExceededError, DbError)


async def test_the_workers_budget_per_workflow_refuses_the_step_that_would_pass_it(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    worker = Worker(
        db, "w1", poll_seconds=0.05, price_book=PRICES, max_cost_per_workflow=Decimal(3)
    )
    refused: list[BaseException] = []
    async for run in worker.runs(until_idle=True):
        async with run:
            await run.step("one", {}, _fail_then_succeed)
            try:
                await run.step("two", {}, _fail_then_succeed)
            except BudgetExceededError as error:
                refused.append(error)
                raise
    (budget,) = refused
    assert isinstance(budget, BudgetExceededError)
    assert (budget.spent, budget.limit, budget.step_id) == (Decimal("3.000000"), Decimal(3), "two")
    assert (await stored_workflow(db, workflow.id)).state is WorkflowState.FAILED


@pytest.mark.parametrize("bad", [Decimal("-1"), 1.5, "5"])
def test_a_bad_budget_or_price_book_is_refused(db: Database, bad: object) -> None:
    with pytest.raises(ValidationError):
        Worker(db, "w1", max_cost_per_workflow=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Worker(db, "w1", price_book={"m": Price(1, 1)})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Database.from_url("sqlite://", price_book=bad)  # type: ignore[arg-type]
