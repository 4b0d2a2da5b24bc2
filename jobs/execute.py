"""The body of one run: check out, run the agent in the sandbox, enforce budgets, push.

Returns an :class:`Outcome`; recording it (and retries, follow-ups, promotion) is the runner's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from core.config import Budget
from core.errors import SandboxError, SandboxUnavailable, WorkspaceError
from core.models import EventType, Run, Task
from core.ports import SandboxSpec
from core.states import TaskState
from jobs.context import WorkerContext
from jobs.pump import EventPump
from jobs.workspace import GitWorkspace

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How a run ended, before it is written down."""

    state: TaskState
    reason: str | None = None
    retryable: bool = False
    summary: str | None = None
    exit_code: int | None = None
    branch: str | None = None
    head_sha: str | None = None
    files_changed: list[str] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    steps: int = 0
    model: str | None = None
    links: dict[str, Any] = field(default_factory=dict)


class Execution:
    """Runs the agent of one run and publishes what it changed."""

    def __init__(self, wc: WorkerContext, task: Task, run: Run, cancel: asyncio.Event) -> None:
        self.wc = wc
        self.task = task
        self.run = run
        self.cancel = cancel
        self.budget: Budget = wc.config.budget.tightened(task.budget)
        self.budget_hit: str | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def execute(self) -> Outcome:
        """Do the run; never raises for agent, git or sandbox failures (they become outcomes)."""
        task, run = self.task, self.run
        _name, profile = self.wc.config.profile(task.agent)
        auth = await self.wc.git_credentials.auth_header(task) if self.wc.git_credentials else None
        workspace = GitWorkspace(
            str(task.links.get("clone_url") or task.repo),
            self.wc.settings.handoff_workspace_dir,
            task.id,
            run.id,
            base_ref=task.base_ref,
            sandbox_uid=_uid(profile.user),
            sandbox_gid=_gid(profile.user),
            auth_header=auth,
        )
        pump = EventPump(self.wc.sessions, self.wc.journal, task, run.id, on_usage=self._check_usage)
        pump.start()
        outcome = Outcome(TaskState.failed, reason="run did not finish")
        try:
            outcome = await self._execute(workspace, pump, profile)
            return outcome
        finally:
            outcome.tokens_in, outcome.tokens_out, outcome.cost_usd = (
                pump.tokens_in,
                pump.tokens_out,
                pump.cost_usd,
            )
            with contextlib.suppress(Exception):
                await pump.close()
            for t in list(self._background):
                with contextlib.suppress(Exception):
                    await t
            await workspace.cleanup()

    async def _execute(self, workspace: GitWorkspace, pump: EventPump, profile: Any) -> Outcome:
        task, run = self.task, self.run
        pump.add(EventType.progress.value, {"step": "checkout", "repo": task.repo})
        try:
            await workspace.prepare()
        except WorkspaceError as exc:
            pump.add(EventType.error.value, {"message": str(exc)})
            return Outcome(TaskState.failed, reason=str(exc))
        spec_file = workspace.spec_dir / "task.json"
        spec_file.write_text(json.dumps(task_spec(task, run)), encoding="utf-8")
        spec_file.chmod(0o444)
        env = dict(profile.env)
        env["HANDOFF_INSTRUCTIONS"] = run.instructions or task.instructions
        limits = profile.limits
        budget_deadline = False
        if self.budget.wall_clock_s is not None and self.budget.wall_clock_s < limits.timeout_s:
            limits = limits.model_copy(update={"timeout_s": self.budget.wall_clock_s})
            budget_deadline = True
        spec = SandboxSpec(
            task_id=task.id,
            run_id=run.id,
            image=profile.image,
            command=list(profile.command),
            workspace=workspace.path,
            spec_file=spec_file,
            env=env,
            network=profile.network,
            user=profile.user,
            limits=limits,
        )
        pump.add(EventType.progress.value, {"step": "agent", "image": profile.image})
        try:
            result = await self.wc.sandbox.run(spec, pump.push, self.cancel, on_start=self._container_started)
        except SandboxUnavailable as exc:
            pump.add(EventType.error.value, {"message": str(exc)})
            return Outcome(TaskState.failed, reason=str(exc), retryable=True)
        except SandboxError as exc:
            pump.add(EventType.error.value, {"message": str(exc)})
            return Outcome(TaskState.failed, reason=str(exc))
        if result.timed_out and budget_deadline:
            self.budget_hit = f"wall-clock budget of {limits.timeout_s:g} s used"
        if self.budget_hit is not None:
            # Keep what was done so far on the branch.
            return await self._publish(
                workspace,
                pump,
                Outcome(TaskState.budget_exceeded, reason=f"budget exceeded: {self.budget_hit}"),
            )
        if result.cancelled:
            return Outcome(TaskState.cancelled, reason="cancelled", exit_code=result.exit_code)
        if result.timed_out:
            return Outcome(TaskState.timed_out, reason=f"deadline of {limits.timeout_s:g} s reached")
        if result.oom:
            return Outcome(
                TaskState.failed, reason=f"out of memory (limit {limits.memory})", exit_code=result.exit_code
            )
        if result.exit_code != 0:
            return Outcome(
                TaskState.failed,
                reason=f"agent exited with code {result.exit_code}",
                exit_code=result.exit_code,
            )
        return await self._publish(workspace, pump, Outcome(TaskState.succeeded, exit_code=0))

    async def _publish(self, workspace: GitWorkspace, pump: EventPump, outcome: Outcome) -> Outcome:
        pump.add(EventType.progress.value, {"step": "push", "branch": workspace.branch})
        try:
            pushed = await workspace.publish(_commit_message(self.task, self.run, pump.summary))
        except WorkspaceError as exc:
            pump.add(EventType.error.value, {"message": str(exc)})
            return Outcome(TaskState.failed, reason=str(exc), exit_code=outcome.exit_code)
        outcome.summary = pump.summary or (None if pushed.changed else "no changes")
        if pushed.changed:
            outcome.branch = pushed.branch
            outcome.head_sha = pushed.head_sha
            outcome.files_changed = pushed.files_changed
            for hook in self.wc.post_push:
                try:
                    outcome.links.update(await hook.after_push(self.task, self.run, pushed, outcome.summary))
                except Exception as exc:  # the branch is pushed; say what failed, keep the success
                    log.warning("post-push step failed for task %s: %s", self.task.id, exc)
                    pump.add(EventType.error.value, {"message": f"after push: {exc}"})
        else:
            pump.add(EventType.result.value, {"summary": "no changes", "changed": False})
        return outcome

    def _check_usage(self, tokens: int, cost: float) -> None:
        """Called by the pump as usage is reported: stop the agent once a budget is used."""
        if self.budget_hit is not None:
            return
        if self.budget.max_tokens is not None and tokens > self.budget.max_tokens:
            self.budget_hit = f"{tokens} tokens used (limit {self.budget.max_tokens})"
        elif self.budget.max_cost_usd is not None and cost > self.budget.max_cost_usd:
            self.budget_hit = f"${cost:.4f} spent (limit ${self.budget.max_cost_usd:.2f})"
        if self.budget_hit is not None:
            log.info("run %s: %s; stopping the agent", self.run.id, self.budget_hit)
            self.cancel.set()

    def _container_started(self, container_id: str) -> None:
        self.run.container_id = container_id
        task = asyncio.create_task(self._store_container(container_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _store_container(self, container_id: str) -> None:
        try:
            async with self.wc.sessions.begin() as session:
                await session.execute(
                    update(Run).where(col(Run.id) == self.run.id).values(container_id=container_id)
                )
        except Exception as exc:  # the label on the container still lets the reaper find it
            log.warning("could not record container of run %s: %s", self.run.id, exc)


def task_spec(task: Task, run: Run) -> dict[str, Any]:
    """The JSON written to ``/handoff/task.json`` for the agent."""
    return {
        "task_id": task.id,
        "run_id": run.id,
        "attempt": run.attempt,
        "repo": task.repo,
        "base_ref": task.base_ref,
        "instructions": run.instructions or task.instructions,
        "original_instructions": task.instructions,
        "followups": task.links.get("followups_done", []),
        "source": task.source,
        "requester": task.requester,
        "links": task.links,
        "budget": task.budget,
    }


def _commit_message(task: Task, run: Run, summary: str | None) -> str:
    text = run.instructions or task.instructions
    title = (text.strip().splitlines() or ["changes"])[0][:68]
    body = f"\n\n{summary}" if summary else ""
    return f"handoff: {title}{body}\n\nHandoff-Task: {task.id}\nHandoff-Run: {run.id}"


def _uid(user: str) -> int | None:
    head = user.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def _gid(user: str) -> int | None:
    parts = user.split(":", 1)
    return int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else _uid(user)
