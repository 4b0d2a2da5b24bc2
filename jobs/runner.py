"""``run_task``: one run of a task, from lease to pushed branch.

The job takes ids and reloads state. It leases the task with a compare-and-set (``queued`` →
``running``) only for the queue generation it was enqueued with, so a duplicate or stale job — arq
re-running a job after a crash, a second enqueue — never starts a second container for one run.
Admission (concurrency caps, one task per target) is decided under the admission lock at lease
time; a task that may not start yet goes to ``waiting`` and is promoted when a slot frees.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from core.clock import utcnow
from core.errors import QueueUnavailable
from core.journal import StaleState
from core.links import FollowUp, TaskLinks
from core.models import Run, Task
from core.scheduling import admission_lock, admit, enqueue, promote_waiting, queue_position
from core.states import RunOutcome, TaskState
from jobs.dependencies import describe
from jobs.execute import Execution, Outcome
from jobs.intake import outage_of
from jobs.queue import CANCEL_KEY
from jobs.services import WorkerServices

log = logging.getLogger(__name__)


async def run_task(ctx: dict[str, Any], task_id: str, gen: int) -> str:
    """arq job: run ``task_id`` if it is still queued at generation ``gen``; return the outcome."""
    wc: WorkerServices = ctx["handoff"]
    return await Runner(wc).run(task_id, gen)


class Runner:
    """Leases, runs and records one run of one task."""

    def __init__(self, wc: WorkerServices) -> None:
        self.wc = wc

    async def run(self, task_id: str, gen: int) -> str:
        """Lease, execute, and record one run."""
        leased = await self._lease(task_id, gen)
        if isinstance(leased, str):
            return leased
        task, run = leased
        cancel = asyncio.Event()
        self.wc.active[task_id] = cancel
        if await self._cancel_marked(task_id):
            cancel.set()
        heartbeat = asyncio.create_task(self._heartbeat(task, run, cancel), name=f"heartbeat-{run.id}")
        execution = Execution(self.wc, task, run, cancel)
        try:
            try:
                outcome = await execution.execute()
            except asyncio.CancelledError:
                # Worker shutdown past its grace period: the sandbox killed the container on
                # cancellation; hand the task back to the queue instead of losing it.
                await asyncio.shield(self._requeue_after_shutdown(task, run))
                raise
            # Still ours (heartbeat on, listed as active) until the outcome is written: a reaper
            # must not take the run for lost while the database or Redis is briefly away.
            return await self._finish(task, run, outcome)
        finally:
            heartbeat.cancel()
            self.wc.active.pop(task_id, None)

    async def _cancel_marked(self, task_id: str) -> bool:
        try:
            pool = await self.wc.queue.pool()
            return bool(await pool.exists(CANCEL_KEY.format(task_id=task_id)))
        except (QueueUnavailable, RedisError, OSError):
            return False  # Redis away: the heartbeat still reads the cancel flag from the database

    async def _lease(self, task_id: str, gen: int) -> tuple[Task, Run] | str:
        journal = self.wc.journal
        async with self.wc.sessions.begin() as session:
            await admission_lock(session, task_id)
            task = await session.get(Task, task_id, populate_existing=True)
            if task is None:
                log.info("task %s not found (creation rolled back?); nothing to run", task_id)
                return "missing"
            if task.state != TaskState.queued.value or task.queue_gen != gen:
                log.info(
                    "task %s is %s at gen %s; job for gen %s skipped",
                    task_id,
                    task.state,
                    task.queue_gen,
                    gen,
                )
                return "skipped"
            if task.cancel_requested:
                await journal.transition(session, task, TaskState.cancelled, reason="cancelled before start")
                return TaskState.cancelled.value
            # One walk: this task, and every waiting task a free slot may take, admitted together.
            admission = await admit(session, journal, self.wc.queue, self.wc.config.limits, task)
            reason = admission.reason
            if reason is not None:
                position = await queue_position(session, task)
                await journal.transition(
                    session, task, TaskState.waiting, reason=reason, extra={"position": position}
                )
                return TaskState.waiting.value
            instructions = await self._instructions(session, task)
            attempt = task.attempts + 1
            run = Run(
                task_id=task.id, attempt=attempt, worker_id=self.wc.worker_id, instructions=instructions
            )
            session.add(run)
            await session.flush()
            values: dict[str, Any] = {"attempts": attempt, "tries": task.tries + 1}
            if task.followups:
                links = TaskLinks.of(task)
                values["followups"] = []
                values["links"] = links.with_(followups_done=links.followup_history(task.followups)).dump()
            await journal.transition(
                session,
                task,
                TaskState.running,
                run_id=run.id,
                extra={"attempt": attempt, "run_id": run.id},
                values=values,
            )
        return task, run

    @staticmethod
    async def _instructions(session: AsyncSession, task: Task) -> str:
        """What this run works on: new follow-ups, else what the last run worked on (a retry or a
        requeue repeats it), else the task's own instructions."""
        if task.followups:
            texts = [f.text for f in FollowUp.parse_all(task.followups)]
            # Follow-ups that arrived before the first run add to the request, not replace it.
            return "\n\n".join([task.instructions, *texts] if task.attempts == 0 else texts)
        last = (
            await session.execute(
                select(Run).where(col(Run.task_id) == task.id).order_by(col(Run.attempt).desc()).limit(1)
            )
        ).scalar_one_or_none()
        if last is not None and last.instructions:
            return last.instructions
        return task.instructions

    async def _heartbeat(self, task: Task, run: Run, cancel: asyncio.Event) -> None:
        # Tick every second so a cancel recorded in the database (when the pub/sub message was
        # missed) still stops the container quickly; write the heartbeat at its own interval.
        interval = self.wc.config.limits.heartbeat_s
        loop = asyncio.get_running_loop()
        last_beat = loop.time()
        warned = float("-inf")
        while True:
            await asyncio.sleep(min(1.0, interval))
            try:
                async with self.wc.sessions.begin() as session:
                    if loop.time() - last_beat >= interval:
                        await session.execute(
                            update(Run).where(col(Run.id) == run.id).values(heartbeat_at=utcnow())
                        )
                        last_beat = loop.time()
                    fresh = await session.get(Task, task.id, populate_existing=True)
                if fresh is not None and fresh.cancel_requested:
                    cancel.set()
            except Exception as exc:  # a database blip must not kill the run
                if loop.time() - warned >= 10.0:
                    warned = loop.time()
                    log.warning("heartbeat of run %s failed (%s); the run goes on", run.id, describe(exc))

    async def _finish(self, task: Task, run: Run, outcome: Outcome) -> str:
        """Record the outcome; while the database or Redis is away, wait for it (never drop it)."""
        loop = asyncio.get_running_loop()
        delay, since, logged = 0.2, loop.time(), loop.time()
        while True:
            try:
                return await self._record(task, run, outcome)
            except Exception as exc:
                dependency = outage_of(exc)
                if dependency is None:
                    raise
                self.wc.gate.lost(dependency, exc)
                if loop.time() - logged >= 5.0 or delay == 0.2:
                    logged = loop.time()
                    log.warning(
                        "run %s ended %s; waiting %.0f s so far for %s to record it (%s)",
                        run.id,
                        outcome.state.value,
                        loop.time() - since,
                        dependency,
                        describe(exc),
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _record(self, task: Task, run: Run, outcome: Outcome) -> str:
        retry = outcome.retryable and task.tries < task.max_attempts
        journal = self.wc.journal
        try:
            async with self.wc.sessions.begin() as session:
                await admission_lock(session, task.id)
                fresh = await session.get(Task, task.id, populate_existing=True)
                assert fresh is not None
                followup = bool(fresh.followups) and not retry and outcome.state is not TaskState.cancelled
                run_outcome = RunOutcome.requeued if retry else RunOutcome(outcome.state.value)
                await session.execute(
                    update(Run)
                    .where(col(Run.id) == run.id)
                    .values(
                        outcome=run_outcome.value,
                        finished_at=utcnow(),
                        exit_code=outcome.exit_code,
                        branch=outcome.branch,
                        head_sha=outcome.head_sha,
                        summary=outcome.summary,
                        error=outcome.reason if outcome.state is not TaskState.succeeded else None,
                        tokens_in=outcome.usage.tokens_in,
                        tokens_out=outcome.usage.tokens_out,
                        cost_usd=outcome.usage.cost_usd,
                        steps=outcome.steps,
                        model=outcome.model,
                    )
                )
                extra: dict[str, Any] = {"attempt": run.attempt, "run_id": run.id}
                if outcome.files_changed:
                    extra["files_changed"] = outcome.files_changed
                if outcome.summary:
                    extra["summary"] = outcome.summary
                values: dict[str, Any] = {"cancel_requested": False}
                if outcome.branch:
                    values["branch"] = outcome.branch
                if outcome.summary:
                    values["summary"] = outcome.summary
                if not outcome.changes.empty:
                    values["links"] = outcome.changes.apply(TaskLinks.of(fresh)).dump()
                    pull = outcome.changes.pull_request
                    if pull is not None and pull.url:
                        values["pr_url"] = pull.url
                        extra["pr_url"] = pull.url
                if retry or followup:
                    delay = 0.0
                    reason = "follow-up queued"
                    if retry:
                        delay = min(self.wc.config.limits.retry_backoff_s * 2.0 ** (fresh.tries - 1), 300.0)
                        reason = f"{outcome.reason}; retrying in {delay:g} s"
                    await journal.transition(
                        session,
                        fresh,
                        TaskState.queued,
                        reason=reason,
                        run_id=run.id,
                        extra=extra,
                        values=values,
                    )
                    await enqueue(session, self.wc.queue, fresh, defer_s=delay)
                else:
                    await journal.transition(
                        session,
                        fresh,
                        outcome.state,
                        reason=outcome.reason,
                        run_id=run.id,
                        extra=extra,
                        values=values,
                    )
                # This run's slot and target are free now: let the oldest waiting tasks in.
                await promote_waiting(session, journal, self.wc.queue, self.wc.config.limits)
        except StaleState:
            log.warning(
                "task %s changed state under run %s; outcome %s not recorded", task.id, run.id, outcome.state
            )
            return "stale"
        return TaskState.queued.value if (retry or followup) else outcome.state.value

    async def _requeue_after_shutdown(self, task: Task, run: Run) -> None:
        try:
            async with self.wc.sessions.begin() as session:
                fresh = await session.get(Task, task.id, populate_existing=True)
                if fresh is None or fresh.state != TaskState.running.value:
                    return
                await session.execute(
                    update(Run)
                    .where(col(Run.id) == run.id)
                    .values(outcome=RunOutcome.requeued.value, finished_at=utcnow(), error="worker shut down")
                )
                await self.wc.journal.transition(
                    session,
                    fresh,
                    TaskState.queued,
                    reason="worker shut down; requeued",
                    run_id=run.id,
                    values={"tries": max(fresh.tries - 1, 0)},
                )
                await enqueue(session, self.wc.queue, fresh)
        except Exception:
            log.exception("could not requeue task %s after shutdown; the reaper will", task.id)
