"""``ecl-db usage`` and the usage columns of ``ecl-db workflows show``, on the demo's database."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.cli.helpers import Invoke, json_of

from ecl_persistence.cli.demo_steps import DEMO_MODEL, DEMO_PRICES
from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.domain import TokenUsage


def _demo(ecl_db: Invoke, tmp_path: Path) -> dict[str, Any]:
    return json_of(ecl_db("demo", "--json", "--artifacts-dir", str(tmp_path / "out")))  # type: ignore[no-any-return]


def test_the_demo_records_usage_model_and_cost_and_usage_sums_them(
    ecl_db: Invoke, tmp_path: Path
) -> None:
    executions = _demo(ecl_db, tmp_path)["step_executions"]
    priced = [e for e in executions if e["usage"] is not None]
    assert [e["step_id"] for e in priced] == ["gather", "summarise", "summarise"]
    failed = executions[1]
    assert failed["state"] == "failed"
    assert failed["usage"]["input_tokens"] > 0, "the failed call still read its prompt"
    for execution in priced:
        usage = TokenUsage(**execution["usage"])
        assert execution["model"] == DEMO_MODEL
        assert execution["tokens_used"] == usage.total
        assert execution["cost"] == str(DEMO_PRICES[DEMO_MODEL].cost(usage))
    by_model = json_of(ecl_db("usage", "--by", "model", "--json"))
    assert by_model["group_by"] == "model"
    rows = {row["key"]: row for row in by_model["rows"]}
    assert set(rows) == {DEMO_MODEL, None}
    demo = rows[DEMO_MODEL]
    assert demo["attempts"] == demo["recorded"] == 3
    assert demo["input_tokens"] == sum(e["usage"]["input_tokens"] for e in priced)
    assert demo["cached_tokens"] == sum(e["usage"]["cached_tokens"] for e in priced)
    assert Decimal(demo["cost"]) == sum(Decimal(e["cost"]) for e in priced)
    assert (rows[None]["attempts"], rows[None]["cost"]) == (1, None)
    (total,) = json_of(ecl_db("usage", "--json"))["rows"]
    assert total["attempts"] == len(executions)
    assert total["cost"] == demo["cost"]
    (day,) = json_of(ecl_db("usage", "--by", "day", "--since", "7d", "--json"))["rows"]
    assert day["attempts"] == len(executions)
    assert json_of(ecl_db("usage", "--until", "1d", "--json"))["rows"] == []
    (ours,) = json_of(ecl_db("usage", "--by", "definition", "--json"))["rows"]
    assert ours["key"] == "ecl-demo"
    assert json_of(ecl_db("usage", "--definition", "other", "--json"))["rows"] == []
    table = ecl_db("usage", "--by", "model")
    assert table.exit_code == 0
    assert DEMO_MODEL in table.stdout
    assert demo["cost"] in table.stdout


def test_workflows_show_prints_usage_model_and_cost_per_attempt(
    ecl_db: Invoke, tmp_path: Path
) -> None:
    document = _demo(ecl_db, tmp_path)
    shown = ecl_db("workflows", "show", document["workflow"]["id"])
    assert shown.exit_code == 0, shown.output
    assert "in/out/cached/reasoning" in shown.stdout
    for execution in document["step_executions"]:
        if execution["usage"] is not None:
            usage = execution["usage"]
            cell = (
                f"{usage['input_tokens']:,}/{usage['output_tokens']:,}/"
                f"{usage['cached_tokens']:,}/{usage['reasoning_tokens']:,}"
            )
            assert cell in shown.stdout
            assert execution["cost"] in shown.stdout
    assert f"cost {document['stats']['total_cost']}" in shown.stdout


def test_usage_refuses_a_bad_grouping_or_time(ecl_db: Invoke) -> None:
    assert ecl_db("usage", "--by", "week").exit_code == ExitCode.USAGE
    assert ecl_db("usage", "--since", "yesterday").exit_code == ExitCode.USAGE
    empty = ecl_db("usage")
    assert empty.exit_code == 0
    assert "No step executions match." in empty.stdout
