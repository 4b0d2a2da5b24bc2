"""``run_task``: one attempt of a task, from lease to pushed branch.

The job takes ids and reloads state. It leases the task with a compare-and-set (``queued`` →
``running``) for exactly the attempt it was enqueued for, so a duplicate or stale job — arq re-running
a job after a crash, a second enqueue — never starts a second container for the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from core.clock import utcnow
from core.errors import QueueUnavailable, SandboxError, SandboxUnavailable, WorkspaceError
from core.journal import StaleState, transition
from core.models import EventType, Run, Task
from core.ports import SandboxSpec
from core.states import RunOutcome, TaskState
from jobs.context import WorkerContext
from jobs.pump import EventPump
from jobs.queue import CANCEL_KEY
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
    files_changed: list[str] | None = None


async def run_task(ctx: dict[str, Any], task_id: str, attempt: int) -> str:
    """arq job: run attempt ``attempt`` of ``task_id``; returns the final state (or ``skipped``)."""
    wc: WorkerContext = ctx["handoff"]
    return await Runner(wc).run(task_id, attempt)


class Runner:
    """Runs one attempt of one task."""

    def __init__(self, wc: WorkerContext) -> None:
        self.wc = wc
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, task_id: str, attempt: int) -> str:
        """Lease, execute, and record one attempt."""
        leased = await self._lease(task_id, attempt)
        if leased is None:
            return "skipped"
        task, run = leased
        cancel = asyncio.Event()
        self.wc.active[task_id] = cancel
        if await self._cancel_marked(task_id):
            cancel.set()
        heartbeat = asyncio.create_task(self._heartbeat(task, run, cancel), name=f"heartbeat-{run.id}")
        try:
            outcome = await self._execute(task, run, cancel)
        except asyncio.CancelledError:
            # Worker shutdown past its grace period: the container is already gone (the sandbox
            # kills it on cancellation); hand the task back to the queue instead of losing it.
            await asyncio.shield(self._requeue_after_shutdown(task, run))
            raise
        finally:
            heartbeat.cancel()
            self.wc.active.pop(task_id, None)
        return await self._finish(task, run, outcome)

    async def _cancel_marked(self, task_id: str) -> bool:
        try:
            pool = await self.wc.queue.pool()
            return bool(await pool.exists(CANCEL_KEY.format(task_id=task_id)))
        except (QueueUnavailable, OSError):
            return False

    async def _lease(self, task_id: str, attempt: int) -> tuple[Task, Run] | None:
        async with self.wc.sessions.begin() as session:
            task = await session.get(Task, task_id)
            if task is None:
                log.info("task %s not found (creation rolled back?); nothing to run", task_id)
                return None
            if task.state != TaskState.queued.value or task.attempts + 1 != attempt:
                log.info(
                    "task %s is %s at attempt %s; job for attempt %s skipped",
                    task_id,
                    task.state,
                    task.attempts,
                    attempt,
                )
                return None
            if task.cancel_requested:
                await transition(session, task, TaskState.cancelled, reason="cancelled before start")
                return None
            run = Run(task_id=task.id, attempt=attempt, worker_id=self.wc.worker_id)
            session.add(run)
            await session.flush()
            try:
                await transition(
                    session,
                    task,
                    TaskState.running,
                    run_id=run.id,
                    extra={"attempt": attempt},
                    values={"attempts": attempt, "tries": task.tries + 1},
                )
            except StaleState:
                # Cancelled or leased by someone else between our read and our write.
                await session.rollback()
                return None
        return task, run

    async def _heartbeat(self, task: Task, run: Run, cancel: asyncio.Event) -> None:
        # Tick every second so a cancel recorded in the database (when the pub/sub message was
        # missed) still stops the container quickly; write the heartbeat at its own interval.
        interval = self.wc.config.limits.heartbeat_s
        loop = asyncio.get_running_loop()
        last_beat = loop.time()
        while True:
            await asyncio.sleep(1.0)
            try:
                async with self.wc.sessions.begin() as session:
                    if loop.time() - last_beat >= interval:
                        await session.execute(
                            update(Run).where(Run.id == run.id).values(heartbeat_at=utcnow())  # type: ignore[arg-type]
                        )
                        last_beat = loop.time()
                    fresh = await session.get(Task, task.id, populate_existing=True)
                if fresh is not None and fresh.cancel_requested:
                    cancel.set()
            except Exception as exc:  # a database blip must not kill the run
                log.warning("heartbeat of run %s failed: %s", run.id, exc)

    async def _execute(self, task: Task, run: Run, cancel: asyncio.Event) -> Outcome:
        _name, profile = self.wc.config.profile(task.agent)
        workspace = GitWorkspace(
            task.repo,
            self.wc.settings.handoff_workspace_dir,
            task.id,
            run.id,
            base_ref=task.base_ref,
            sandbox_uid=_uid(profile.user),
            sandbox_gid=_gid(profile.user),
        )
        pump = EventPump(self.wc.sessions, task.id, run.id)
        pump.start()
        try:
            pump.add(EventType.progress.value, {"step": "checkout", "repo": task.repo})
            try:
                await workspace.prepare()
            except WorkspaceError as exc:
                pump.add(EventType.error.value, {"message": str(exc)})
                return Outcome(TaskState.failed, reason=str(exc))
            spec_file = workspace.spec_dir / "task.json"
            spec_file.write_text(json.dumps(_task_spec(task, run)), encoding="utf-8")
            spec_file.chmod(0o444)
            env = {k: v for k, v in profile.env.items()}
            env["HANDOFF_INSTRUCTIONS"] = task.instructions
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
                limits=profile.limits,
            )
            pump.add(EventType.progress.value, {"step": "sandbox", "image": profile.image})
            try:
                result = await self.wc.sandbox.run(
                    spec, pump.push, cancel, on_start=lambda cid: self._container_started(run, cid)
                )
            except SandboxUnavailable as exc:
                pump.add(EventType.error.value, {"message": str(exc)})
                return Outcome(TaskState.failed, reason=str(exc), retryable=True)
            except SandboxError as exc:
                pump.add(EventType.error.value, {"message": str(exc)})
                return Outcome(TaskState.failed, reason=str(exc))
            if result.cancelled:
                return Outcome(TaskState.cancelled, reason="cancelled", exit_code=result.exit_code)
            if result.timed_out:
                limit = profile.limits.timeout_s
                return Outcome(TaskState.timed_out, reason=f"deadline of {limit:g} s reached")
            if result.oom:
                return Outcome(
                    TaskState.failed,
                    reason=f"out of memory (limit {profile.limits.memory})",
                    exit_code=result.exit_code,
                )
            if result.exit_code != 0:
                return Outcome(
                    TaskState.failed,
                    reason=f"agent exited with code {result.exit_code}",
                    exit_code=result.exit_code,
                )
            pump.add(EventType.progress.value, {"step": "push", "branch": workspace.branch})
            try:
                pushed = await workspace.publish(_commit_message(task, pump.summary))
            except WorkspaceError as exc:
                pump.add(EventType.error.value, {"message": str(exc)})
                return Outcome(TaskState.failed, reason=str(exc), exit_code=0)
            summary = pump.summary or ("no changes" if not pushed.changed else None)
            if not pushed.changed:
                pump.add(EventType.result.value, {"summary": "no changes", "changed": False})
            return Outcome(
                TaskState.succeeded,
                summary=summary,
                exit_code=0,
                branch=pushed.branch if pushed.changed else None,
                head_sha=pushed.head_sha,
                files_changed=pushed.files_changed,
            )
        finally:
            with contextlib.suppress(Exception):
                await pump.close()
            await workspace.cleanup()

    def _container_started(self, run: Run, container_id: str) -> None:
        run.container_id = container_id
        self._background.add(asyncio.create_task(self._store_container(run.id, container_id)))

    async def _store_container(self, run_id: str, container_id: str) -> None:
        try:
            async with self.wc.sessions.begin() as session:
                await session.execute(
                    update(Run).where(Run.id == run_id).values(container_id=container_id)  # type: ignore[arg-type]
                )
        except Exception as exc:  # the label on the container still lets the reaper find it
            log.warning("could not record container of run %s: %s", run_id, exc)

    async def _finish(self, task: Task, run: Run, outcome: Outcome) -> str:
        retry = outcome.retryable and task.tries < task.max_attempts
        try:
            async with self.wc.sessions.begin() as session:
                fresh = await session.get(Task, task.id, populate_existing=True)
                assert fresh is not None
                await session.execute(
                    update(Run)
                    .where(Run.id == run.id)  # type: ignore[arg-type]
                    .values(
                        outcome=(RunOutcome.requeued if retry else RunOutcome(outcome.state.value)).value,
                        finished_at=utcnow(),
                        exit_code=outcome.exit_code,
                        branch=outcome.branch,
                        head_sha=outcome.head_sha,
                        summary=outcome.summary,
                        error=outcome.reason if outcome.state is not TaskState.succeeded else None,
                    )
                )
                extra: dict[str, Any] = {"attempt": run.attempt}
                if outcome.files_changed:
                    extra["files_changed"] = outcome.files_changed
                values: dict[str, Any] = {"cancel_requested": False}
                if outcome.branch:
                    values["branch"] = outcome.branch
                if outcome.summary:
                    values["summary"] = outcome.summary
                if retry:
                    delay = min(self.wc.config.limits.retry_backoff_s * 2.0 ** (task.tries - 1), 300.0)
                    await transition(
                        session,
                        fresh,
                        TaskState.queued,
                        reason=f"{outcome.reason}; retrying in {delay:g} s",
                        run_id=run.id,
                        extra=extra,
                    )
                    await self.wc.queue.enqueue_run(task.id, fresh.attempts + 1, defer_s=delay)
                else:
                    await transition(
                        session,
                        fresh,
                        outcome.state,
                        reason=outcome.reason,
                        run_id=run.id,
                        extra=extra,
                        values=values,
                    )
        except QueueUnavailable:
            # Could not queue the retry: end the task instead of leaving it running forever.
            async with self.wc.sessions.begin() as session:
                fresh = await session.get(Task, task.id, populate_existing=True)
                assert fresh is not None
                await session.execute(
                    update(Run)
                    .where(Run.id == run.id)
                    .values(outcome=RunOutcome.failed.value, finished_at=utcnow())  # type: ignore[arg-type]
                )
                await transition(
                    session,
                    fresh,
                    TaskState.failed,
                    reason=f"{outcome.reason}; the retry could not be queued",
                    run_id=run.id,
                )
            return TaskState.failed.value
        except StaleState:
            log.warning(
                "task %s changed state under run %s; outcome %s not recorded", task.id, run.id, outcome.state
            )
            return "stale"
        return TaskState.queued.value if retry else outcome.state.value

    async def _requeue_after_shutdown(self, task: Task, run: Run) -> None:
        try:
            async with self.wc.sessions.begin() as session:
                fresh = await session.get(Task, task.id, populate_existing=True)
                if fresh is None or fresh.state != TaskState.running.value:
                    return
                await session.execute(
                    update(Run)
                    .where(Run.id == run.id)
                    .values(outcome=RunOutcome.requeued.value, finished_at=utcnow())  # type: ignore[arg-type]
                )
                await transition(
                    session,
                    fresh,
                    TaskState.queued,
                    reason="worker shut down; requeued",
                    run_id=run.id,
                    values={"tries": max(fresh.tries - 1, 0)},
                )
                await self.wc.queue.enqueue_run(task.id, fresh.attempts + 1)
        except Exception:
            log.exception("could not requeue task %s after shutdown; the reaper will", task.id)


def _task_spec(task: Task, run: Run) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "run_id": run.id,
        "attempt": run.attempt,
        "repo": task.repo,
        "base_ref": task.base_ref,
        "instructions": task.instructions,
        "source": task.source,
        "requester": task.requester,
        "links": task.links,
        "budget": task.budget,
    }


def _commit_message(task: Task, summary: str | None) -> str:
    title = (task.instructions.strip().splitlines() or ["changes"])[0][:68]
    body = f"\n\n{summary}" if summary else ""
    return f"handoff: {title}{body}\n\nHandoff-Task: {task.id}"


def _uid(user: str) -> int | None:
    head = user.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def _gid(user: str) -> int | None:
    parts = user.split(":", 1)
    return int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else _uid(user)
