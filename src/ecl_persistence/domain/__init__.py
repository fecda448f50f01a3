"""The pure domain layer of ecl-persistence: ids, states, payload rules and models.

Nothing here touches a database; the repositories build on these types.
"""

from __future__ import annotations

from ecl_persistence.domain.aggregate import WorkflowAggregate, stats_of
from ecl_persistence.domain.artifacts import Artifact
from ecl_persistence.domain.clock import utc_now
from ecl_persistence.domain.ids import (
    MAX_ID_LENGTH,
    ArtifactId,
    StepExecutionId,
    StepId,
    WorkflowId,
    new_uuid7,
    parse_uuid,
)
from ecl_persistence.domain.leases import Lease, check_lease
from ecl_persistence.domain.limits import (
    MAX_RUNNING,
    ConcurrencyLimit,
    check_concurrency_key,
    check_max_running,
)
from ecl_persistence.domain.models import (
    MAX_ATTEMPT,
    MAX_ERROR_LENGTH,
    MAX_PRIORITY,
    MIN_PRIORITY,
    StepExecution,
    Workflow,
)
from ecl_persistence.domain.paths import MAX_ARTIFACT_PATH_LENGTH, check_artifact_path
from ecl_persistence.domain.payload import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    MIN_JSON_INT,
    MISSING,
    JsonValue,
    Missing,
    check_json,
    check_text,
    decode_json,
    encode_json,
    load_json,
)
from ecl_persistence.domain.resume import ResumePoint
from ecl_persistence.domain.states import WORKFLOW_TRANSITIONS, StepExecutionState, WorkflowState
from ecl_persistence.domain.summaries import ExecutionStats, Page
from ecl_persistence.domain.transitions import WorkflowTransition, check_actor, check_reason
from ecl_persistence.domain.usage import (
    COST_PLACES,
    MAX_COST,
    Price,
    PriceBook,
    TokenUsage,
    UsageRow,
    check_cost,
    check_model,
)

__all__ = [
    "COST_PLACES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_ARTIFACT_PATH_LENGTH",
    "MAX_ATTEMPT",
    "MAX_COST",
    "MAX_ERROR_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT",
    "MAX_PRIORITY",
    "MAX_RUNNING",
    "MIN_JSON_INT",
    "MIN_PRIORITY",
    "MISSING",
    "WORKFLOW_TRANSITIONS",
    "Artifact",
    "ArtifactId",
    "ConcurrencyLimit",
    "ExecutionStats",
    "JsonValue",
    "Lease",
    "Missing",
    "Page",
    "Price",
    "PriceBook",
    "ResumePoint",
    "StepExecution",
    "StepExecutionId",
    "StepExecutionState",
    "StepId",
    "TokenUsage",
    "UsageRow",
    "Workflow",
    "WorkflowAggregate",
    "WorkflowId",
    "WorkflowState",
    "WorkflowTransition",
    "check_actor",
    "check_artifact_path",
    "check_concurrency_key",
    "check_cost",
    "check_json",
    "check_lease",
    "check_max_running",
    "check_model",
    "check_reason",
    "check_text",
    "decode_json",
    "encode_json",
    "load_json",
    "new_uuid7",
    "parse_uuid",
    "stats_of",
    "utc_now",
]
