"""Repositories: domain objects in, domain objects out, SQL in between."""

from ecl_persistence.repositories.artifacts import ArtifactRepository
from ecl_persistence.repositories.step_executions import StepExecutionRepository
from ecl_persistence.repositories.workflows import WorkflowRepository

__all__ = ["ArtifactRepository", "StepExecutionRepository", "WorkflowRepository"]
