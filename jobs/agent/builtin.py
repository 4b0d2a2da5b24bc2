"""A run of the built-in agent inside :class:`jobs.execute.Execution`.

Starts the long-lived sandbox container, runs :func:`jobs.agent.runtime.run_agent` in it, stops
the container, and maps how the agent ended onto the same outcomes (and the same publishing) as a
command profile: finished → pushed and ``succeeded``; a budget → ``budget_exceeded`` with the
partial change pushed; the agent's question → partial work pushed and the task ``waiting``; an API
failure → ``failed`` with the API's message (retryable when it was transient).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from core.config import Profile
from core.errors import SandboxError, SandboxUnavailable
from core.models import EventType
from core.ports import SandboxSpec
from core.states import TaskState
from jobs.agent.llm import ModelFatal
from jobs.agent.runtime import build_llm, run_agent
from jobs.pump import EventPump
from jobs.workspace import GitWorkspace

if TYPE_CHECKING:
    from jobs.execute import Execution, Outcome

log = logging.getLogger(__name__)
#: Prefix of the waiting reason of a task whose agent asked a question (see core.scheduling).
QUESTION_PREFIX = "question: "


async def run_builtin(
    ex: Execution,
    workspace: GitWorkspace,
    pump: EventPump,
    profile: Profile,
    spec: SandboxSpec,
    budget_deadline: bool,
) -> Outcome:
    """Run the built-in agent for ``ex``'s run; see the module docstring."""
    from jobs.execute import Outcome, timed_out

    try:
        llm = build_llm(profile, ex.wc.settings)
    except ModelFatal as exc:
        pump.add(EventType.error.value, {"message": str(exc)})
        return Outcome(TaskState.failed, reason=str(exc))
    pump.add(EventType.progress.value, {"step": "sandbox", "image": profile.image})
    try:
        handle = await ex.wc.sandbox.start(spec)
    except (SandboxError, SandboxUnavailable) as exc:
        await llm.close()
        pump.add(EventType.error.value, {"message": str(exc)})
        return Outcome(TaskState.failed, reason=str(exc), retryable=isinstance(exc, SandboxUnavailable))
    ex.container_started(handle.container_id)
    try:
        agent = await run_agent(
            llm=llm,
            sandbox=ex.wc.sandbox,
            handle=handle,
            config=ex.wc.config,
            profile=profile,
            task=ex.task,
            run=ex.run,
            budget=ex.budget,
            emit=pump.add,
            cancel=ex.cancel,
            timeout_s=spec.limits.timeout_s,
            budget_hit=lambda: ex.budget_hit,
            branch=workspace.branch,
            timeout_is_budget=budget_deadline,
        )
    except Exception as exc:  # a bug in the runtime: end this run clearly, not the worker's job
        log.exception("built-in agent of run %s failed", ex.run.id)
        pump.add(EventType.error.value, {"message": f"agent runtime error: {exc}"})
        return Outcome(TaskState.failed, reason=f"agent runtime error: {exc}")
    finally:
        await llm.close()
        stopped = None
        with contextlib.suppress(SandboxError, SandboxUnavailable):  # the reaper removes it by label
            stopped = await ex.wc.sandbox.stop(handle)
    ex.steps, ex.model, ex.changes = agent.steps, agent.model, agent.changes
    ex.findings = agent.findings
    result = agent.result
    if result.status == "finished":
        pump.add(EventType.result.value, {"summary": agent.summary or "done", "steps": agent.steps})
        return await ex.publish(workspace, pump, Outcome(TaskState.succeeded, exit_code=0))
    if result.status == "asked":
        question = result.question or ""
        pump.add(EventType.question.value, {"question": question})
        # Push the work so far: the answer's run continues from the branch.
        reason = QUESTION_PREFIX + question.splitlines()[0][:200] if question else QUESTION_PREFIX.strip()
        return await ex.publish(workspace, pump, Outcome(TaskState.waiting, reason=reason))
    if result.status == "budget":
        if ex.budget_hit is None:
            ex.budget_hit = result.reason
        pump.add(EventType.result.value, {"summary": agent.summary, "budget_exceeded": True})
        return await ex.budget_exceeded(workspace, pump)
    if result.status == "cancelled":
        return Outcome(TaskState.cancelled, reason="cancelled")
    if result.status == "timeout":
        return timed_out(spec.limits)
    reason = result.reason or "the agent failed"
    if stopped is not None and stopped.oom:
        reason = f"out of memory (limit {spec.limits.memory}): {reason}"
    pump.add(EventType.error.value, {"message": reason})
    return Outcome(TaskState.failed, reason=reason, retryable=result.retryable)
