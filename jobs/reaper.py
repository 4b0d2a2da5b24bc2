"""The reaper (arq cron, ``unique``): recovers from crashed workers and lost jobs.

Every pass it:

* finds runs whose heartbeat is stale (worker SIGKILLed, machine lost, or a job arq gave up on past
  ``max_tries`` without calling any hook), removes their containers by label, and requeues the task
  (attempt n+1, within ``max_attempts``) or ends it ``failed`` — or ``cancelled`` when a cancel was
  requested — reporting the outcome through the journal and so the outbox;
* re-enqueues ``queued`` tasks whose job is gone from Redis (e.g. Redis restarted without
  persistence), with a new queue generation;
* promotes waiting tasks into free slots (in case a promotion was missed);
* at most hourly, prunes what is past ``retention_days``: delivery records, sent notifications, and
  the events of tasks that ended before then.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlmodel import col

from core.clock import utcnow
from core.errors import DependencyUnavailable
from core.journal import StaleState
from core.models import Delivery, Outbox, OutboxState, Run, RunEvent, Task
from core.scheduling import admission_lock, enqueue, promote_waiting
from core.states import TERMINAL, RunOutcome, TaskState
from jobs.dependencies import DATABASE
from jobs.queue import job_id
from jobs.services import WorkerServices

log = logging.getLogger(__name__)

TERMINAL_STATES = sorted(state.value for state in TERMINAL)


async def reap(ctx: dict[str, Any]) -> dict[str, int]:
    """arq cron entry point."""
    wc: WorkerServices = ctx["handoff"]
    return await Reaper(wc).run()


class Reaper:
    """One reaper pass."""

    def __init__(self, wc: WorkerServices) -> None:
        self.wc = wc

    async def run(self) -> dict[str, int]:
        """Do every kind of recovery; return counts for the log."""
        counts = {"stale_runs": await self.stale_runs(), "lost_jobs": 0, "promoted": 0}
        try:
            counts["lost_jobs"] = await self.lost_jobs()
        except DependencyUnavailable as exc:
            log.warning("reaper: cannot check queued jobs: %s", exc)
        try:
            counts["promoted"] = await self.promote()
        except DependencyUnavailable as exc:
            log.warning("reaper: cannot promote waiting tasks: %s", exc)
        counts["pruned"] = await self.prune()
        if any(counts.values()):
            log.info("reaper: %s", counts)
        return counts

    async def prune(self, every_s: float = 3600.0, batch: int = 5000, max_batches: int = 20) -> int:
        """Delete old delivery records, finished notifications and the events of tasks that ended
        before the retention horizon (at most hourly, in short transactions).

        Deliveries are kept longer than GitHub's 3-day redelivery window, so a redelivered event is
        still recognised as a repeat. Events go in batches of ``batch``; when ``max_batches`` were
        not enough, the next pass (not the next hour) goes on.
        """
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self.wc.last_prune < every_s:
            return 0
        self.wc.last_prune = loop_time
        cutoff = utcnow() - timedelta(days=self.wc.config.limits.retention_days)
        removed = 0
        for _ in range(max_batches):
            async with self.wc.sessions.begin() as session:
                old_events = (
                    select(col(RunEvent.id))
                    .join(Task, col(Task.id) == col(RunEvent.task_id))
                    .where(col(RunEvent.ts) < cutoff, col(Task.state).in_(TERMINAL_STATES))
                    .where(col(Task.finished_at) < cutoff)
                    .limit(batch)
                )
                result = await session.execute(
                    delete(RunEvent).where(col(RunEvent.id).in_(old_events.scalar_subquery()))
                )
            deleted = int(result.rowcount or 0)  # type: ignore[attr-defined]
            removed += deleted
            if deleted < batch:
                break
        else:
            self.wc.last_prune = float("-inf")  # more to do: continue on the next pass
        async with self.wc.sessions.begin() as session:
            old = select(col(Delivery.id)).where(col(Delivery.received_at) < cutoff).limit(batch)
            result = await session.execute(
                delete(Delivery).where(col(Delivery.id).in_(old.scalar_subquery()))
            )
            removed += int(result.rowcount or 0)  # type: ignore[attr-defined]
            done = (
                select(col(Outbox.id))
                .where(col(Outbox.state) != OutboxState.pending.value, col(Outbox.created_at) < cutoff)
                .limit(batch)
            )
            result = await session.execute(delete(Outbox).where(col(Outbox.id).in_(done.scalar_subquery())))
            removed += int(result.rowcount or 0)  # type: ignore[attr-defined]
        return removed

    async def stale_runs(self) -> int:
        """End or requeue the tasks of runs whose heartbeat stopped."""
        stale_after = self.wc.config.limits.stale_after_s
        if self.wc.gate.up_for(DATABASE) < stale_after:
            # The database was away a moment ago: every heartbeat is late, for no lost worker.
            # Give the workers one full period to write theirs again before judging.
            return 0
        cutoff = utcnow() - timedelta(seconds=stale_after)
        async with self.wc.sessions() as session:
            rows = await session.execute(
                select(Run).where(
                    col(Run.outcome) == RunOutcome.running.value, col(Run.heartbeat_at) < cutoff
                )
            )
            stale = list(rows.scalars())
        for run in stale:
            if run.task_id in self.wc.active:
                continue  # ours and alive (a slow database made the heartbeat late)
            try:
                removed = await self.wc.sandbox.remove_run(run.id)
            except DependencyUnavailable as exc:
                log.warning("reaper: cannot remove containers of run %s yet: %s", run.id, exc)
                continue  # never report a run ended while its container may still be running
            await self._recover(run, removed)
        return len(stale)

    async def _recover(self, run: Run, removed: list[str]) -> None:
        journal = self.wc.journal
        reason = "worker lost (no heartbeat)"
        async with self.wc.sessions.begin() as session:
            await admission_lock(session, run.task_id)
            fresh_run = await session.get(Run, run.id, populate_existing=True)
            task = await session.get(Task, run.task_id, populate_existing=True)
            if fresh_run is None or task is None or fresh_run.outcome != RunOutcome.running.value:
                return
            extra = {"attempt": run.attempt, "run_id": run.id, "containers_removed": len(removed)}
            if task.state != TaskState.running.value:
                outcome = RunOutcome.failed
            elif task.cancel_requested:
                outcome = RunOutcome.cancelled
                await journal.transition(
                    session,
                    task,
                    TaskState.cancelled,
                    reason="cancelled",
                    run_id=run.id,
                    extra=extra,
                    values={"cancel_requested": False},
                )
            elif task.tries < task.max_attempts:
                outcome = RunOutcome.requeued
                await journal.transition(
                    session, task, TaskState.queued, reason=f"{reason}; requeued", run_id=run.id, extra=extra
                )
                await enqueue(session, self.wc.queue, task)
            else:
                outcome = RunOutcome.failed
                await journal.transition(
                    session,
                    task,
                    TaskState.failed,
                    reason=f"{reason}; gave up after {task.tries} attempt(s)",
                    run_id=run.id,
                    extra=extra,
                )
            await session.execute(
                update(Run)
                .where(col(Run.id) == run.id)
                .values(outcome=outcome.value, finished_at=utcnow(), error=reason)
            )
            await promote_waiting(session, journal, self.wc.queue, self.wc.config.limits)
        log.warning("reaper: run %s of task %s: %s → %s", run.id, run.task_id, reason, outcome.value)

    async def lost_jobs(self) -> int:
        """Re-enqueue queued tasks whose arq job no longer exists."""
        # A queued task younger than this may simply not have been picked up yet.
        cutoff = utcnow() - timedelta(seconds=self.wc.config.limits.lost_job_grace_s)
        async with self.wc.sessions() as session:
            rows = await session.execute(
                select(Task).where(col(Task.state) == TaskState.queued.value, col(Task.updated_at) < cutoff)
            )
            queued = list(rows.scalars())
        if not queued:
            return 0
        pool = await self.wc.queue.pool()
        lost = 0
        for task in queued:
            jid = job_id(task.id, task.queue_gen)
            if await pool.exists(f"arq:job:{jid}", f"arq:in-progress:{jid}", f"arq:retry:{jid}"):
                continue
            try:
                async with self.wc.sessions.begin() as session:
                    fresh = await session.get(Task, task.id, populate_existing=True)
                    if (
                        fresh is None
                        or fresh.state != TaskState.queued.value
                        or fresh.queue_gen != task.queue_gen
                    ):
                        continue
                    await self.wc.journal.append_event(
                        session, fresh, None, "status", {"state": "queued", "reason": "job lost; re-enqueued"}
                    )
                    await enqueue(session, self.wc.queue, fresh)
                    lost += 1
            except StaleState:
                continue
        return lost

    async def promote(self) -> int:
        """Promote waiting tasks into free slots."""
        async with self.wc.sessions.begin() as session:
            await admission_lock(session, "reaper")
            promoted = await promote_waiting(session, self.wc.journal, self.wc.queue, self.wc.config.limits)
        return len(promoted)
