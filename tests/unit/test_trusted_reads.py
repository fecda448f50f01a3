"""The read path's shortcuts refuse exactly what the validating path refuses.

Stored JSON is decoded by ``load_json``, which checks numbers as it decodes
and walks the document only when its text could hold something else
``check_json`` refuses; rows become domain objects through ``_from_row``,
which skips the validators once the repository's cheap checks passed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecl_persistence.domain import (
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    MISSING,
    JsonValue,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowState,
    check_json,
    encode_json,
    load_json,
)
from ecl_persistence.domain.payload import _TRUSTED_LENGTH
from ecl_persistence.errors import QueryFailedError, SerializationError
from ecl_persistence.repositories._values import step_execution_from_values, workflow_from_values

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8)
_json_values: st.SearchStrategy[JsonValue] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=MAX_JSON_INT)
    # Adding 0.0 turns -0.0, which payloads refuse, into 0.0 and changes no other float.
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda x: x + 0.0)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=25,
)


@given(_json_values)
def test_load_json_gives_back_what_encode_json_wrote(value: JsonValue) -> None:
    assert load_json(encode_json(value)) == value


@given(_json_values)
def test_load_json_reads_postgres_spaced_output_too(value: JsonValue) -> None:
    # jsonb prints ", " and ": "; the shortcut must not depend on compact text.
    assert load_json(json.dumps(value, ensure_ascii=False)) == value


REFUSED_TEXT = {
    "nul-escape": '{"a": "x\\u0000y"}',
    "nul-escape-in-key": '{"\\u0000": 1}',
    "lone-surrogate-escape": '["\\ud800"]',
    "integer-beyond-64-bits": '{"n": 9223372036854775808}',
    "negative-integer-beyond-64-bits": "[-9223372036854775809]",
    "float-overflowing-to-infinity": "[1e999]",
    "nan-literal": "[NaN]",
    "infinity-literal": '{"x": -Infinity}',
    "nested-too-deep": "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
    "malformed": '{"a": ',
}


@pytest.mark.parametrize("text", list(REFUSED_TEXT.values()), ids=list(REFUSED_TEXT))
def test_load_json_refuses_what_check_json_refuses(text: str) -> None:
    with pytest.raises(SerializationError) as caught:
        load_json(text)
    assert "9223372036854775808" not in str(caught.value), "messages never hold payloads"


def test_load_json_accepts_the_64_bit_limits_and_the_deepest_nesting() -> None:
    assert load_json(f"[{MAX_JSON_INT}, {-(2**63)}]") == [MAX_JSON_INT, -(2**63)]
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert load_json(deepest) == json.loads(deepest)


def test_load_json_walks_a_long_document_in_full() -> None:
    # Longer than the shortcut trusts: the full check runs, and still accepts it.
    value: JsonValue = {"text": "x" * (_TRUSTED_LENGTH + 1)}
    assert load_json(encode_json(value)) == value


def test_load_json_refuses_a_long_document_with_a_nul_escape_far_in() -> None:
    text = json.dumps(["x" * (_TRUSTED_LENGTH + 1), "\x00"])
    with pytest.raises(SerializationError):
        load_json(text)


# --- trusted construction -------------------------------------------------------------


def test_from_row_takes_exactly_the_fields_in_declaration_order() -> None:
    workflow = attrs.evolve(
        Workflow.new("research", {"topic": "tides"}, concurrency_key="k", priority=4),
        forked_from=Workflow.new("research", {}).id,
    )
    step = attrs.evolve(StepExecution.start(workflow.id, "search", {}), copied_from=workflow.id)
    for item in (workflow, step):
        values = attrs.astuple(item, recurse=False)
        assert type(item)._from_row(*values) == item
        # One value short (or one too many) is refused, never shifted into another field.
        with pytest.raises(ValueError, match="zip"):
            type(item)._from_row(*values[:-1])
        with pytest.raises(ValueError, match="zip"):
            type(item)._from_row(*values, None)


NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def _workflow_values(**changes: Any) -> tuple[Any, ...]:
    workflow = Workflow.new("research", {"topic": "tides"}, now=NOW)
    return attrs.astuple(attrs.evolve(workflow, **changes), recurse=False)


def _step_values(**changes: Any) -> tuple[Any, ...]:
    workflow = Workflow.new("research", {}, now=NOW)
    step = StepExecution.start(workflow.id, "search", {"q": 1}, now=NOW)
    return attrs.astuple(attrs.evolve(step, **changes), recurse=False)


def test_a_valid_row_becomes_an_object_equal_to_the_validated_one() -> None:
    values = _workflow_values(state=WorkflowState.COMPLETED, output=[1], completed_at=NOW)
    assert workflow_from_values(values, table="workflows", id="w") == Workflow(*values)
    values = _step_values(state=StepExecutionState.SUCCEEDED, duration_ms=5, tokens_used=0)
    assert step_execution_from_values(values, table="t", id="s") == StepExecution(*values)


def test_non_ascii_text_read_back_goes_through_the_validator_and_is_kept() -> None:
    values = _workflow_values(definition_id="recherche-é", error="délai dépassé")
    assert workflow_from_values(values, table="workflows", id="w").definition_id == "recherche-é"


def _replace(values: tuple[Any, ...], cls: type[Any], name: str, value: Any) -> tuple[Any, ...]:
    names = [field.name for field in attrs.fields(cls)]
    changed = list(values)
    changed[names.index(name)] = value
    return tuple(changed)


CORRUPT_WORKFLOW_FIELDS = {
    "empty-definition-id": ("definition_id", ""),
    "nul-in-definition-id": ("definition_id", "a\x00b"),
    "definition-id-too-long": ("definition_id", "x" * 256),
    "nul-in-error": ("error", "bad\x00"),
    "timestamp-text": ("created_at", "yesterday"),
    "naive-timestamp": ("updated_at", datetime(2025, 1, 1)),
    "metadata-list": ("metadata", [1, 2]),
    "version-zero": ("version", 0),
    "version-bool": ("version", True),
    "id-not-uuid": ("id", "not-a-uuid"),
}


@pytest.mark.parametrize(
    ("name", "value"), list(CORRUPT_WORKFLOW_FIELDS.values()), ids=list(CORRUPT_WORKFLOW_FIELDS)
)
def test_a_workflow_row_the_domain_refuses_raises_query_failed_naming_the_field(
    name: str, value: Any
) -> None:
    values = _replace(_workflow_values(), Workflow, name, value)
    with pytest.raises(QueryFailedError, match=name):
        workflow_from_values(values, table="workflows", id="w-1")


CORRUPT_STEP_FIELDS = {
    "attempt-zero": ("attempt", 0),
    "attempt-too-high": ("attempt", 1_000_001),
    "negative-duration": ("duration_ms", -1),
    "tokens-beyond-64-bits": ("tokens_used", 2**63),
    "nul-in-step-id": ("step_id", "s\x00"),
    "workflow-id-not-uuid": ("workflow_id", 7),
    "completed-at-text": ("completed_at", "soon"),
    "metadata-string": ("metadata", "x"),
}


@pytest.mark.parametrize(
    ("name", "value"), list(CORRUPT_STEP_FIELDS.values()), ids=list(CORRUPT_STEP_FIELDS)
)
def test_a_step_row_the_domain_refuses_raises_query_failed_naming_the_field(
    name: str, value: Any
) -> None:
    values = _replace(_step_values(), StepExecution, name, value)
    with pytest.raises(QueryFailedError, match=name):
        step_execution_from_values(values, table="step_executions", id="s-1")


def test_output_missing_and_json_null_stay_distinct_through_the_shortcut() -> None:
    missing = workflow_from_values(_workflow_values(), table="workflows", id="w")
    null = workflow_from_values(_workflow_values(output=None), table="workflows", id="w")
    assert missing.output is MISSING
    assert null.output is None
    assert check_json(null.input, field="input") == {"topic": "tides"}
