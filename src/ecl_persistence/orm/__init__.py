"""The schema: declarative SQLAlchemy models and the portable column types they use.

Alembic migrations, not these models, create the schema in a database; the
models describe it for the repositories, for an application's own queries
through ``uow.session``, and for ``alembic check``. An entity loaded by
anyone holds decoded values: aware UTC datetimes and JSON documents.
"""

from ecl_persistence.orm.base import NAMING_CONVENTION, Base
from ecl_persistence.orm.models import (
    ArtifactRecord,
    ConcurrencyLimitRecord,
    PayloadRecord,
    StepExecutionRecord,
    WorkflowRecord,
    WorkflowTransitionRecord,
)
from ecl_persistence.orm.types import (
    JsonPayload,
    Money,
    MoneySum,
    PayloadRef,
    Undecodable,
    UTCDateTime,
)

__all__ = [
    "NAMING_CONVENTION",
    "ArtifactRecord",
    "Base",
    "ConcurrencyLimitRecord",
    "JsonPayload",
    "Money",
    "MoneySum",
    "PayloadRecord",
    "PayloadRef",
    "StepExecutionRecord",
    "UTCDateTime",
    "Undecodable",
    "WorkflowRecord",
    "WorkflowTransitionRecord",
]
