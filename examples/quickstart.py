"""Run a small workflow against the embedded SQLite default and print its history.

Usage: ``python examples/quickstart.py`` (database from ``ECL_DATABASE_URL``,
else ``sqlite:///./ecl.db``).
"""

from __future__ import annotations

import asyncio

from ecl_persistence import (
    Database,
    StepExecution,
    StepExecutionState,
    StepId,
    Workflow,
    WorkflowState,
)


async def main() -> None:
    """Create a workflow, record two steps (one retried), complete it, print it."""
    async with Database.from_env() as db:
        await db.migrate()
        async with db.session() as uow:
            workflow = await uow.workflows.create(Workflow.new("research", {"topic": "tides"}))
            await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
        for step, attempt, state in (
            ("search", 1, StepExecutionState.FAILED),
            ("search", 2, StepExecutionState.SUCCEEDED),
            ("summarise", 1, StepExecutionState.SUCCEEDED),
        ):
            async with db.session() as uow:
                execution = await uow.step_executions.create(
                    StepExecution.start(
                        workflow.id, StepId(step), {"topic": "tides"}, attempt=attempt
                    )
                )
                await uow.step_executions.update_completion(
                    execution.id,
                    state,
                    output={"ok": True} if state is StepExecutionState.SUCCEEDED else None,
                    error="search backend timed out"
                    if state is StepExecutionState.FAILED
                    else None,
                    duration_ms=120 * attempt,
                    tokens_used=300,
                )
        async with db.session() as uow:
            await uow.workflows.update_output(workflow.id, {"summary": "tides follow the moon"})
            done = await uow.workflows.update_state(workflow.id, WorkflowState.COMPLETED)
            history = await uow.step_executions.get_for_workflow(workflow.id)
            stats = await uow.step_executions.get_stats(workflow.id)
        print(f"workflow {done.id} ({done.definition_id}): {done.state}")
        for execution in history:
            print(
                f"  {execution.step_id:<10} attempt {execution.attempt}  {execution.state:<9}"
                f"  {execution.duration_ms} ms  {execution.tokens_used} tokens"
            )
        print(
            f"  {stats.total_executions} executions, {stats.succeeded_count} succeeded, "
            f"{stats.failed_count} failed, {stats.total_duration_ms} ms, "
            f"{stats.total_tokens} tokens"
        )


if __name__ == "__main__":
    asyncio.run(main())
