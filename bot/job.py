"""The ``slack_ingest`` job: handle one recorded Slack request, outside the request that brought it.

The endpoint answered once the ``Delivery`` row (with the request in it) was committed and this job
queued (job id = the delivery). The job hands the request to :class:`~bot.intake.Intake`, records
the outcome on the row and drops the request from it. Every effect is idempotent — the task's ``dedupe_key`` and the outbox idempotency keys derive
from the delivery id — so a job that runs twice changes nothing the second time, and a row no
longer ``received`` is never handled again. A dependency outage propagates, so the worker retries
the job later; any other failure is recorded on the row (and logged) instead of retried forever.

:class:`SlackSweep` (the worker's reconcile cron) queues again the job of a request still
``received`` a while after it came: one whose job Redis lost (a restart without persistence) —
the row holds the request, so nothing the person asked for is lost with it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlmodel import col

from bot.ingress import INGEST_JOB, RECEIVED, ingest_job
from bot.intake import Intake
from core.clock import utcnow
from core.db import Sessions, is_database_outage
from core.errors import DependencyUnavailable, InvalidInput
from core.models import Delivery
from core.ports import Queue

log = logging.getLogger(__name__)

__all__ = ["INGEST_JOB", "SlackJob", "SlackSweep"]

# A request still "received" after this long lost its job (the worker takes jobs within ~50 ms).
STUCK_AFTER = timedelta(minutes=2)
# Older than this, the person has moved on: do not start their request now.
GIVE_UP_AFTER = timedelta(hours=1)


class SlackJob:
    """The job body: :meth:`run` is registered with arq as ``slack_ingest``."""

    def __init__(self, sessions: Sessions, intake: Intake) -> None:
        self.sessions = sessions
        self.intake = intake

    async def run(self, ctx: dict[str, Any], delivery_id: str) -> str:
        """Handle the recorded request unless it was handled already; return its outcome."""
        async with self.sessions() as session:
            row = await session.get(Delivery, delivery_id)
        if row is None:
            return "unknown delivery"
        if row.outcome != RECEIVED or row.payload is None:
            return f"already handled: {row.outcome}"
        task_id: str | None = None
        try:
            answer = await self.intake.handle(delivery_id, row.event, row.payload)
            outcome, task_id = answer.outcome, answer.task_id
        except DependencyUnavailable:
            raise  # the worker retries the job once the database or Redis answers again
        except InvalidInput as exc:
            outcome = f"refused: {exc}"
        except Exception as exc:  # a bug: record it on the delivery rather than retry it forever
            if is_database_outage(exc):
                raise
            log.exception("slack delivery %s (%s) failed", delivery_id, row.event)
            outcome = f"error: {type(exc).__name__}: {exc}"
        log.info("slack delivery %s (%s): %s", delivery_id, row.event, outcome)
        async with self.sessions.begin() as session:
            await session.execute(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id, col(Delivery.outcome) == RECEIVED)
                .values(outcome=outcome[:255], task_id=task_id, payload=None)
            )
        sender = ctx.get("outbox_sender")
        if sender is not None:
            sender.wake()  # the answer (a status message, a reply) was just written: send it now
        return outcome


class SlackSweep:
    """Queues again the jobs of Slack requests stuck in ``received`` (their job was lost)."""

    def __init__(self, sessions: Sessions, queue: Queue, queue_name: str) -> None:
        self.sessions = sessions
        self.queue = queue
        self.queue_name = queue_name

    async def reconcile(self) -> int:
        """Re-queue stuck requests (a job id that still exists makes it a no-op); return how many."""
        now = utcnow()
        async with self.sessions() as session:
            rows = await session.execute(
                select(col(Delivery.id)).where(
                    col(Delivery.source) == "slack",
                    col(Delivery.outcome) == RECEIVED,
                    col(Delivery.received_at) < now - STUCK_AFTER,
                    col(Delivery.received_at) > now - GIVE_UP_AFTER,
                )
            )
            stuck = [str(r) for r in rows.scalars()]
        if not stuck:
            return 0
        queued = await self.queue.enqueue_jobs([ingest_job(self.queue_name, d) for d in stuck])
        again = [d for d, added in zip(stuck, queued, strict=True) if added]
        if again:
            log.warning("slack: %d request(s) had lost their job; queued again: %s", len(again), again)
        return len(again)
