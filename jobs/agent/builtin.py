"""A run of the built-in agent: the long-lived sandbox container, the agent loop in it, the end.

Starts the container, runs :func:`jobs.agent.runtime.run_agent` in it, stops the container, and
reports how the agent ended as an :class:`~jobs.agent.ending.AgentEnd` (with the agent's own
events: its summary, its question, its failure). What that means for the task — pushed and
``succeeded``, ``budget_exceeded`` with the partial change pushed, ``waiting`` for the answer,
``failed`` (retryable when the API was down) — is :class:`jobs.execute.Execution`'s to decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from core.budget import Budget
from core.config import HandoffConfig, Profile
from core.errors import SandboxError, SandboxUnavailable
from core.models import EventType, Run, Task
from core.ports import Sandbox, SandboxSpec
from core.settings import Settings
from jobs.agent.ending import AgentEnd
from jobs.agent.llm import ModelFatal
from jobs.agent.runtime import build_llm, run_agent
from jobs.pump import EventPump

log = logging.getLogger(__name__)


async def run_builtin(
    *,
    settings: Settings,
    config: HandoffConfig,
    sandbox: Sandbox,
    profile: Profile,
    task: Task,
    run: Run,
    budget: Budget,
    spec: SandboxSpec,
    pump: EventPump,
    cancel: asyncio.Event,
    branch: str,
    budget_deadline: bool,
    budget_hit: Callable[[], str | None],
    on_start: Callable[[str], None],
) -> AgentEnd:
    """Run the built-in agent for ``run`` of ``task`` in a container made from ``spec``."""
    try:
        llm = build_llm(profile, settings)
    except ModelFatal as exc:
        pump.add(EventType.error.value, {"message": str(exc)})
        return AgentEnd("failed", reason=str(exc))
    pump.add(EventType.progress.value, {"step": "sandbox", "image": profile.image})
    try:
        handle = await sandbox.start(spec)
    except (SandboxError, SandboxUnavailable) as exc:
        await llm.close()
        pump.add(EventType.error.value, {"message": str(exc)})
        return AgentEnd("failed", reason=str(exc), retryable=isinstance(exc, SandboxUnavailable))
    on_start(handle.container_id)
    try:
        agent = await run_agent(
            llm=llm,
            sandbox=sandbox,
            handle=handle,
            config=config,
            profile=profile,
            task=task,
            run=run,
            budget=budget,
            emit=pump.add,
            cancel=cancel,
            timeout_s=spec.limits.timeout_s,
            budget_hit=budget_hit,
            branch=branch,
            timeout_is_budget=budget_deadline,
        )
    except Exception as exc:  # a bug in the runtime: end this run clearly, not the worker's job
        log.exception("built-in agent of run %s failed", run.id)
        pump.add(EventType.error.value, {"message": f"agent runtime error: {exc}"})
        return AgentEnd("failed", reason=f"agent runtime error: {exc}")
    finally:
        await llm.close()
        stopped = None
        with contextlib.suppress(SandboxError, SandboxUnavailable):  # the reaper removes it by label
            stopped = await sandbox.stop(handle)
    result = agent.result
    end = AgentEnd(
        result.status,
        reason=result.reason,
        retryable=result.retryable,
        question=result.question,
        oom=stopped is not None and stopped.oom,
        steps=agent.steps,
        model=agent.model,
        changes=agent.changes,
        findings=agent.findings,
    )
    if result.status == "finished":
        end.exit_code = 0
        pump.add(EventType.result.value, {"summary": agent.summary or "done", "steps": agent.steps})
    elif result.status == "asked":
        pump.add(EventType.question.value, {"question": result.question or ""})
    elif result.status == "budget":
        pump.add(EventType.result.value, {"summary": agent.summary, "budget_exceeded": True})
    elif result.status == "failed":
        end.reason = result.reason or "the agent failed"
        if end.oom:
            end.reason = f"out of memory (limit {spec.limits.memory}): {end.reason}"
        pump.add(EventType.error.value, {"message": end.reason})
    return end
