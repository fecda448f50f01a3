"""Unit tests of the pure domain layer: ids, states, payload rules, paths and models."""

from __future__ import annotations

import ast
import enum
import itertools
import math
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.timezones import OddTz, RaisingTz

import ecl_persistence.domain as domain_package
from ecl_persistence.domain import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_ARTIFACT_PATH_LENGTH,
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    MIN_JSON_INT,
    MISSING,
    WORKFLOW_TRANSITIONS,
    Artifact,
    ExecutionStats,
    JsonValue,
    Missing,
    Page,
    StepExecution,
    StepExecutionState,
    StepId,
    Workflow,
    WorkflowId,
    WorkflowState,
    check_artifact_path,
    check_json,
    check_text,
    decode_json,
    encode_json,
    new_uuid7,
    utc_now,
)
from ecl_persistence.domain import payload as payload_module
from ecl_persistence.errors import SerializationError, ValidationError

SECRET = "hunter2-TOP-SECRET"

# --- states -------------------------------------------------------------------


def _workflow_move_allowed(source: WorkflowState, target: WorkflowState) -> bool:
    """The lifecycle rule of the design, written out independently of the table."""
    if source == target or source == WorkflowState.COMPLETED:
        return False
    if source == WorkflowState.FAILED:
        # Resumed, retried or cancelled.
        return target in (WorkflowState.RUNNING, WorkflowState.PENDING, WorkflowState.CANCELLED)
    if source == WorkflowState.CANCELLED:
        return target == WorkflowState.PENDING  # only a retry
    if source == WorkflowState.PENDING:
        return True
    return target in (WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED)


@pytest.mark.parametrize(
    ("source", "target"), list(itertools.product(WorkflowState, WorkflowState))
)
def test_workflow_transition_follows_lifecycle_rule(
    source: WorkflowState, target: WorkflowState
) -> None:
    expected = _workflow_move_allowed(source, target)
    assert source.can_move_to(target) is expected
    assert (target in WORKFLOW_TRANSITIONS[source]) is expected


def test_workflow_transition_table_covers_every_state_and_is_read_only() -> None:
    assert set(WORKFLOW_TRANSITIONS) == set(WorkflowState)
    with pytest.raises(TypeError):
        cast("Any", WORKFLOW_TRANSITIONS)[WorkflowState.COMPLETED] = frozenset()


def test_workflow_state_values_are_lower_case_names() -> None:
    assert [state.value for state in WorkflowState] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert WorkflowState("running") is WorkflowState.RUNNING


def test_workflow_state_is_finished_only_when_completed_failed_or_cancelled() -> None:
    finished = {state for state in WorkflowState if state.is_finished}
    assert finished == {WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED}


@pytest.mark.parametrize(
    ("source", "target"), list(itertools.product(StepExecutionState, StepExecutionState))
)
def test_step_completes_only_from_open_state_to_final_state(
    source: StepExecutionState, target: StepExecutionState
) -> None:
    expected = source in (StepExecutionState.PENDING, StepExecutionState.RUNNING) and target in (
        StepExecutionState.SUCCEEDED,
        StepExecutionState.FAILED,
    )
    assert source.can_complete_to(target) is expected


def test_step_state_is_finished_only_when_succeeded_or_failed() -> None:
    finished = {state for state in StepExecutionState if state.is_finished}
    assert finished == {StepExecutionState.SUCCEEDED, StepExecutionState.FAILED}
    assert [state.value for state in StepExecutionState] == [
        "pending",
        "running",
        "succeeded",
        "failed",
    ]


# --- ids ----------------------------------------------------------------------


def test_new_uuid7_has_version_7_and_rfc_4122_variant() -> None:
    value = new_uuid7()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_new_uuid7_embeds_current_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = new_uuid7()
    after = time.time_ns() // 1_000_000
    # The generator may borrow a millisecond when its counter overflows.
    assert before <= value.int >> 80 <= after + 1


def test_new_uuid7_is_strictly_increasing_within_a_process() -> None:
    ids = [new_uuid7() for _ in range(1000)]
    assert all(earlier < later for earlier, later in itertools.pairwise(ids))
    assert all(earlier.bytes < later.bytes for earlier, later in itertools.pairwise(ids))


# --- payloads: rejections -----------------------------------------------------


def _rejects(value: object, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    with pytest.raises(SerializationError) as excinfo:
        check_json(value, field="input", max_bytes=max_bytes)
    message = str(excinfo.value)
    assert message.startswith("input:")
    return message


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_float_is_rejected(number: float) -> None:
    _rejects({"a": [number]})


def test_nul_in_string_value_is_rejected() -> None:
    assert SECRET not in _rejects({"password": SECRET + "\x00"})


def test_nul_in_object_key_is_rejected() -> None:
    assert SECRET not in _rejects({SECRET + "\x00": 1})


def test_lone_surrogate_is_rejected_in_value_and_key() -> None:
    assert SECRET not in _rejects([SECRET + "\ud800"])
    assert SECRET not in _rejects({SECRET + "\udfff": 1})


def test_non_string_key_is_rejected() -> None:
    _rejects({1: "a"})
    _rejects({None: "a"})


class _Colour(enum.StrEnum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 1


class _Secretive:
    def __repr__(self) -> str:
        return SECRET


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        {1, 2},
        b"bytes",
        bytearray(b"x"),
        Decimal("1.5"),
        datetime(2024, 1, 1, tzinfo=UTC),
        _Colour.RED,
        _Level.HIGH,
        OrderedDict(a=1),
        _Secretive(),
        MISSING,
    ],
    ids=repr,
)
def test_non_json_type_is_rejected(value: object) -> None:
    assert SECRET not in _rejects({"nested": [value]})


@pytest.mark.parametrize(
    "number",
    [MAX_JSON_INT + 1, MIN_JSON_INT - 1, 10**100000, -(10**100000)],
    ids=["max+1", "min-1", "10**100000", "-10**100000"],
)
def test_integer_outside_signed_64_bits_is_rejected(number: int) -> None:
    started = time.perf_counter()
    message = _rejects([number])
    assert time.perf_counter() - started < 1
    assert "64-bit" in message


def test_integer_at_signed_64_bit_limits_is_accepted() -> None:
    value = [MIN_JSON_INT, MAX_JSON_INT, True, False]
    assert check_json(value, field="input") is value


def _nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_at_depth_limit_is_accepted() -> None:
    value = _nested_lists(MAX_JSON_DEPTH)
    assert check_json(value, field="input") is value


def test_nesting_beyond_depth_limit_is_rejected() -> None:
    _rejects(_nested_lists(MAX_JSON_DEPTH + 1))


def test_ten_thousand_deep_nesting_is_rejected_without_recursion_error() -> None:
    assert "deeper" in _rejects(_nested_lists(10_000))


def test_cyclic_list_is_rejected() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    _rejects(cyclic)


def test_cyclic_dict_is_rejected() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    _rejects(cyclic)


def test_hundred_megabyte_string_is_rejected_without_encoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail_encode(value: JsonValue) -> str:
        raise AssertionError("the string should be rejected before encoding")

    monkeypatch.setattr(payload_module, "encode_json", fail_encode)
    huge = "x" * 100_000_000
    started = time.perf_counter()
    assert "larger" in _rejects({"text": huge})
    assert time.perf_counter() - started < 1


def test_shared_references_are_bounded_by_the_size_limit() -> None:
    # 2**60 leaves once expanded; the walk must stop at the size limit.
    value: list[Any] = [SECRET]
    for _ in range(60):
        value = [value, value]
    started = time.perf_counter()
    assert SECRET not in _rejects(value, max_bytes=10_000)
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "text", ["abc", '"quotes" and \\ backslashes', "é ñ 中文 😀", "\n\t\x01 controls"]
)
def test_size_limit_is_the_exact_encoded_utf8_size(text: str) -> None:
    value: JsonValue = {"k": [text, 1.5, None]}
    size = len(encode_json(value).encode("utf-8"))
    assert check_json(value, field="input", max_bytes=size) is value
    _rejects(value, max_bytes=size - 1)


def test_long_list_is_rejected_by_size_limit() -> None:
    _rejects([0] * 1000, max_bytes=100)


# --- payloads: acceptance and round trip ---------------------------------------

_json_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
_json_values: st.SearchStrategy[JsonValue] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=MIN_JSON_INT, max_value=MAX_JSON_INT)
    # Adding 0.0 turns -0.0, which payloads refuse, into 0.0 and changes no other float.
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda x: x + 0.0)
    | _json_text,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(_json_text, children, max_size=5)
    ),
    max_leaves=30,
)


@given(_json_values)
def test_valid_json_is_accepted_unchanged_and_round_trips(value: JsonValue) -> None:
    assert check_json(value, field="input") is value
    assert decode_json(encode_json(value)) == value
    assert decode_json(encode_json(value).encode("utf-8")) == value


@given(_json_values)
def test_size_limit_matches_encoded_size_for_any_json(value: JsonValue) -> None:
    size = len(encode_json(value).encode("utf-8"))
    assert check_json(value, field="input", max_bytes=size) is value
    with pytest.raises(SerializationError):
        check_json(value, field="input", max_bytes=size - 1)


def test_encode_json_is_compact_and_keeps_non_ascii() -> None:
    assert encode_json({"a": [1, "é"]}) == '{"a":[1,"é"]}'


def test_encode_json_wraps_errors_without_the_value() -> None:
    cyclic: list[Any] = [SECRET]
    cyclic.append(cyclic)
    for value in (math.nan, cast("Any", {SECRET}), cyclic):
        with pytest.raises(SerializationError) as excinfo:
            encode_json(value)
        assert SECRET not in str(excinfo.value)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_decode_json_rejects_nan_and_infinity_literals(text: str) -> None:
    with pytest.raises(SerializationError):
        decode_json(text)


def test_decode_json_wraps_invalid_json_without_the_text() -> None:
    with pytest.raises(SerializationError) as excinfo:
        decode_json('{"password": "' + SECRET)
    assert SECRET not in str(excinfo.value)
    assert excinfo.value.__suppress_context__


def test_decode_json_wraps_invalid_utf8_bytes() -> None:
    with pytest.raises(SerializationError):
        decode_json(b'"\xff"')


# --- plain text ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "allow_empty"),
    [(1, False), (None, True), (b"id", False), ("", False), ("a" * 11, False), ("a\x00", False)],
)
def test_check_text_rejects_invalid_text(value: object, allow_empty: bool) -> None:
    with pytest.raises(ValidationError, match=r"^name"):
        check_text(value, field="name", max_length=10, allow_empty=allow_empty)


def test_check_text_rejects_lone_surrogate_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as excinfo:
        check_text(SECRET + "\ud800", field="name", max_length=100)
    assert SECRET not in str(excinfo.value)


def test_check_text_accepts_empty_when_allowed_and_returns_plain_str() -> None:
    assert check_text("", field="error", max_length=10, allow_empty=True) == ""
    result = check_text(_Colour.RED, field="name", max_length=10)
    assert type(result) is str
    assert result == "red"


# --- artifact paths -----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "out/report.md",
        "s3://bucket/key/a.json",
        "gs://b/x",
        "a/.hidden/b..c",
        "100%25 done.txt",
        "s3://bucket//double/slash",
    ],
)
def test_safe_artifact_path_is_accepted_unchanged(path: str) -> None:
    assert check_artifact_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "a/../b",
        "a/./b",
        "a/..",
        ".",
        "/etc/passwd",
        "~/x",
        "~user/x",
        "C:/x",
        "c:x",
        "c://x",
        "a\\b",
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        "file:/etc/passwd",
        "S3://bucket/x",
        "s3://",
        "s3://b/../x",
        "s3://b/%2e%2e/x",
        "a/%2e%2e/b",
        "a/%2E%2E/b",
        "a/%252e%252e/b",
        "a/..%2fb",
        "%2fetc/passwd",
        "a/%25252525252e",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "a\ud800b",
        "",
        "a//b",
        "a/",
        "x" * 5000,
        "x" * (MAX_ARTIFACT_PATH_LENGTH + 1),
    ],
)
def test_unsafe_artifact_path_is_rejected(path: str) -> None:
    with pytest.raises(ValidationError, match=r"^path"):
        check_artifact_path(path)


def test_artifact_path_error_does_not_echo_the_path() -> None:
    for path in (SECRET + "/../x", "/" + SECRET, "file://" + SECRET, SECRET + "\x00"):
        with pytest.raises(ValidationError) as excinfo:
            check_artifact_path(path)
        assert SECRET not in str(excinfo.value)


def test_artifact_path_must_be_a_string() -> None:
    with pytest.raises(ValidationError):
        check_artifact_path(cast("Any", b"out/x"))


# --- models -------------------------------------------------------------------

_NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _workflow() -> Workflow:
    return Workflow.new("definition", {"query": "q"}, now=_NOW)


def _execution() -> StepExecution:
    return StepExecution.start(_workflow().id, "step-1", [1, 2], now=_NOW)


def _artifact() -> Artifact:
    return Artifact.new(_workflow().id, "step-1", "report", path="out/report.md", size_bytes=10)


def test_workflow_new_sets_documented_defaults() -> None:
    workflow = Workflow.new("definition", None)
    assert workflow.state is WorkflowState.PENDING
    assert workflow.output is MISSING
    assert workflow.error is None
    assert workflow.completed_at is None
    assert workflow.metadata == {}
    assert workflow.version == 1
    assert workflow.input is None
    assert workflow.id.version == 7
    assert workflow.created_at == workflow.updated_at
    assert workflow.created_at.tzinfo is UTC
    assert abs(workflow.created_at - utc_now()) < timedelta(minutes=1)


def test_workflow_new_copies_metadata_and_keeps_given_id_and_time() -> None:
    metadata: dict[str, JsonValue] = {"owner": "team"}
    workflow_id = WorkflowId(new_uuid7())
    workflow = Workflow.new("definition", {}, metadata=metadata, id=workflow_id, now=_NOW)
    metadata["owner"] = "changed"
    assert workflow.metadata == {"owner": "team"}
    assert workflow.id == workflow_id
    assert workflow.created_at == _NOW


def test_workflow_state_given_as_plain_string_is_converted() -> None:
    workflow = attrs.evolve(_workflow(), state="running")
    assert workflow.state is WorkflowState.RUNNING


def test_step_execution_start_sets_documented_defaults() -> None:
    execution = _execution()
    assert execution.state is StepExecutionState.RUNNING
    assert execution.attempt == 1
    assert execution.output is MISSING
    assert execution.started_at == _NOW
    assert execution.step_id == StepId("step-1")
    assert (execution.completed_at, execution.duration_ms, execution.tokens_used) == (
        None,
        None,
        None,
    )


def test_artifact_new_defaults_to_octet_stream() -> None:
    artifact = _artifact()
    assert artifact.content_type == "application/octet-stream"
    assert artifact.created_at.tzinfo is UTC
    assert artifact.metadata == {}


_fixed_offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.one_of(st.timezones(), _fixed_offsets),
    )
)
def test_aware_datetime_is_converted_to_utc_keeping_the_instant(moment: datetime) -> None:
    workflow = attrs.evolve(_workflow(), created_at=moment, completed_at=moment)
    offset = moment.utcoffset()
    assert offset is not None
    for stored in (workflow.created_at, workflow.completed_at):
        assert stored is not None
        assert stored.tzinfo is UTC
        assert stored - moment == timedelta(0)
        assert stored.replace(tzinfo=None) == moment.replace(tzinfo=None) - offset


def test_naive_datetime_is_rejected() -> None:
    naive = datetime(2024, 1, 1)
    for build in (
        lambda: attrs.evolve(_workflow(), created_at=naive),
        lambda: attrs.evolve(_workflow(), completed_at=naive),
        lambda: attrs.evolve(_execution(), started_at=naive),
        lambda: attrs.evolve(_artifact(), created_at=naive),
        lambda: Workflow.new("definition", None, now=naive),
    ):
        with pytest.raises(ValidationError, match="aware"):
            build()


def test_datetime_that_overflows_in_utc_is_rejected() -> None:
    edge = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(ValidationError, match="created_at"):
        attrs.evolve(_workflow(), created_at=edge)


@pytest.mark.parametrize(
    ("build", "field", "value"),
    [
        (_execution, "attempt", "1"),
        (_execution, "attempt", 0),
        (_execution, "attempt", True),
        (_execution, "attempt", 1_000_001),
        (_execution, "duration_ms", -1),
        (_execution, "tokens_used", -1),
        (_execution, "tokens_used", 2**63),
        (_execution, "step_id", ""),
        (_execution, "state", "done"),
        (_execution, "workflow_id", "not-a-uuid"),
        (_workflow, "definition_id", ""),
        (_workflow, "definition_id", "a" * 256),
        (_workflow, "definition_id", 42),
        (_workflow, "error", "boom\x00"),
        (_workflow, "error", "e" * 65537),
        (_workflow, "version", 0),
        (_workflow, "version", 1.0),
        (_workflow, "state", WorkflowState),
        (_workflow, "state", StepExecutionState.FAILED),
        (_workflow, "id", str(uuid.uuid4())[:-1]),  # one hex digit short
        (_workflow, "created_at", "2024-01-01T00:00:00Z"),
        (_workflow, "metadata", [1]),
        (_workflow, "metadata", None),
        (_workflow, "idempotency_key", ""),
        (_workflow, "idempotency_key", "k" * 256),
        (_workflow, "idempotency_key", 42),
        (_workflow, "lease_owner", ""),
        (_workflow, "lease_expires_at", datetime(2024, 1, 1)),
        (_workflow, "claim_count", -1),
        (_workflow, "claim_count", True),
        (_artifact, "size_bytes", -1),
        (_artifact, "name", "n" * 256),
        (_artifact, "path", "../x"),
    ],
)
def test_invalid_field_raises_validation_error_naming_the_field(
    build: Any, field: str, value: object
) -> None:
    with pytest.raises(ValidationError, match=field):
        attrs.evolve(build(), **{field: value})


@pytest.mark.parametrize(
    ("build", "field", "value"),
    [
        (_workflow, "input", {"a": math.nan}),
        (_workflow, "output", [SECRET + "\x00"]),
        (_workflow, "metadata", {1: "a"}),
        (_execution, "input", (1, 2)),
        (_execution, "metadata", {"k": {SECRET}}),
        (_artifact, "metadata", {"k": 2**64}),
    ],
)
def test_invalid_payload_raises_serialization_error_naming_the_field(
    build: Any, field: str, value: object
) -> None:
    with pytest.raises(SerializationError, match=field) as excinfo:
        attrs.evolve(build(), **{field: value})
    assert SECRET not in str(excinfo.value)


def test_empty_error_message_is_allowed() -> None:
    assert attrs.evolve(_workflow(), error="").error == ""


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "text/plain; charset=utf-8", "application/vnd.api+json", "image/svg+xml"],
)
def test_mime_shaped_content_type_is_accepted(content_type: str) -> None:
    assert attrs.evolve(_artifact(), content_type=content_type).content_type == content_type


@pytest.mark.parametrize(
    "content_type",
    [
        "",
        "json",
        "/json",
        "text/",
        "text /plain",
        "text/plain\n",
        "text/plain; charset=utf-8\r\nX-Injected: 1",
        "a" * 250 + "/plain",
        "text/plain\x00",
    ],
)
def test_malformed_content_type_is_rejected(content_type: str) -> None:
    with pytest.raises(ValidationError, match="content_type"):
        attrs.evolve(_artifact(), content_type=content_type)


def test_models_are_frozen() -> None:
    workflow = _workflow()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        workflow.state = WorkflowState.RUNNING  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        _execution().attempt = 2  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        _artifact().size_bytes = 2  # type: ignore[misc]


def test_missing_is_distinct_from_json_null() -> None:
    assert MISSING is Missing.MISSING
    assert MISSING is not None
    assert MISSING != None  # noqa: E711
    workflow = _workflow()
    assert attrs.evolve(workflow, output=None) != workflow
    assert attrs.evolve(workflow, output=None).output is None


def test_execution_stats_empty_is_all_zero_and_negative_counts_are_rejected() -> None:
    assert ExecutionStats.empty() == ExecutionStats(0, 0, 0, 0, 0)
    with pytest.raises(ValidationError, match="failed_count"):
        ExecutionStats(1, 0, -1, 0, 0)
    with pytest.raises(ValidationError, match="total_tokens"):
        ExecutionStats(0, 0, 0, 0, cast("Any", 1.5))


def test_page_converts_items_to_a_tuple() -> None:
    page = Page([1, 2, 3], None)
    assert page.items == (1, 2, 3)
    assert isinstance(page.items, tuple)
    assert Page(iter("ab"), "cursor").next_cursor == "cursor"


def test_page_rejects_non_iterable_items_and_non_string_cursor() -> None:
    with pytest.raises(ValidationError):
        Page(cast("Any", 5), None)
    with pytest.raises(ValidationError):
        Page([], cast("Any", 5))


def test_domain_does_not_import_sqlalchemy() -> None:
    package = Path(domain_package.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "sqlalchemy" for name in names), source.name


@pytest.mark.parametrize("zone", [RaisingTz(), OddTz(timedelta(days=2))], ids=type)
def test_tzinfo_that_misbehaves_is_rejected(zone: tzinfo) -> None:
    with pytest.raises(ValidationError, match="created_at"):
        attrs.evolve(_workflow(), created_at=datetime(2024, 1, 1, tzinfo=zone))
