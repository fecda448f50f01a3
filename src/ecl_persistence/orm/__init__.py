"""The schema: declarative SQLAlchemy models and the portable column types they use.

Alembic migrations, not these models, create the schema in a database; the
models describe it for queries and for ``alembic check``.
"""

from ecl_persistence.orm.base import NAMING_CONVENTION, Base
from ecl_persistence.orm.models import (
    ARTIFACTS,
    STEP_EXECUTIONS,
    TRANSITIONS,
    WORKFLOWS,
    ArtifactRecord,
    StepExecutionRecord,
    WorkflowRecord,
    WorkflowTransitionRecord,
)
from ecl_persistence.orm.types import JsonPayload, UTCDateTime

__all__ = [
    "ARTIFACTS",
    "NAMING_CONVENTION",
    "STEP_EXECUTIONS",
    "TRANSITIONS",
    "WORKFLOWS",
    "ArtifactRecord",
    "Base",
    "JsonPayload",
    "StepExecutionRecord",
    "UTCDateTime",
    "WorkflowRecord",
    "WorkflowTransitionRecord",
]
