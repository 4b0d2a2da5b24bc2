"""The ``github_ingest`` job: handle one recorded delivery, outside the webhook request.

The webhook answered once the delivery was committed and this job queued (job id = delivery GUID).
The job routes the slim payload to its handler and records the outcome on the ``Delivery`` row —
the row's ``received`` state is what makes a redelivery queue the job again, and every effect is
idempotent (task ``dedupe_key`` and outbox idempotency keys derive from the GUID), so a job that
runs twice changes nothing the second time. GitHub being slow or rate-limited requeues the job
with a delay instead of failing it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from core.errors import DependencyUnavailable
from core.models import Delivery
from core.ports import JobRequest
from github_app.errors import GitHubError, GitHubRateLimited, GitHubUnavailable
from github_app.ingress import Ingress
from github_app.services import GitHubServices
from github_app.webhooks import RECEIVED

log = logging.getLogger(__name__)

INGEST_JOB = "github_ingest"
MAX_ATTEMPTS = 6


def job_id(queue_name: str, delivery_id: str, attempt: int = 1) -> str:
    """The arq job id: one job per delivery (and per retry of it), per queue (arq's ids are global)."""
    base = f"{queue_name}:github:{delivery_id}"
    return base if attempt == 1 else f"{base}:{attempt}"


class ArqEnqueue:
    """Queues ``github_ingest`` jobs on the queue (``jobs.queue.ArqQueue.enqueue_jobs``: one atomic
    script per job, pipelined, so a burst of webhooks costs one Redis round trip)."""

    def __init__(self, queue: Any, queue_name: str) -> None:
        self.queue = queue
        self.queue_name = queue_name

    def _job(
        self, delivery_id: str, name: str, slim: dict[str, Any], attempt: int, defer_s: float
    ) -> JobRequest:
        return JobRequest(
            job_id(self.queue_name, delivery_id, attempt),
            INGEST_JOB,
            (delivery_id, name, slim, attempt),
            defer_s,
        )

    async def __call__(
        self, delivery_id: str, name: str, slim: dict[str, Any], attempt: int = 1, defer_s: float = 0.0
    ) -> bool:
        """Queue the job (False: a job with its id exists); raise :class:`QueueUnavailable` when Redis is down."""
        [added] = await self.queue.enqueue_jobs([self._job(delivery_id, name, slim, attempt, defer_s)])
        return bool(added)

    async def many(self, jobs: list[tuple[str, str, dict[str, Any]]]) -> list[bool]:
        """Queue first attempts of several deliveries in one pipeline (one round trip)."""
        requests = [self._job(delivery_id, name, slim, 1, 0.0) for delivery_id, name, slim in jobs]
        return list(await self.queue.enqueue_jobs(requests))


class Ingest:
    """The job body: :meth:`run` is registered with arq as ``github_ingest``."""

    def __init__(self, services: GitHubServices) -> None:
        self.svc = services

    async def run(
        self, ctx: dict[str, Any], delivery_id: str, name: str, slim: dict[str, Any], attempt: int = 1
    ) -> str:
        """The arq job: handle the delivery unless it was handled already; return its outcome."""
        async with self.svc.sessions() as session:
            row = await session.get(Delivery, delivery_id)
        if row is None:
            return "unknown delivery"
        if row.outcome != RECEIVED:
            return f"already handled: {row.outcome}"
        event, _, action = name.partition(".")
        spec = self.svc.events.route(event, action or None)
        model = spec.parse(slim) if spec is not None else None
        if spec is None or model is None:
            return await self._finish(delivery_id, "ignored: not handled", None)
        ingress = Ingress(self.svc, delivery_id)
        try:
            outcome = await spec.handler(model, ingress)
        except (GitHubRateLimited, GitHubUnavailable, DependencyUnavailable) as exc:
            if attempt < MAX_ATTEMPTS and self.svc.enqueue is not None:
                delay = exc.retry_after_s if isinstance(exc, GitHubRateLimited) else min(2.0**attempt, 60.0)
                log.warning("delivery %s (%s): %s; retrying in %.0f s", delivery_id, name, exc, delay)
                await self.svc.enqueue(delivery_id, name, slim, attempt + 1, delay)
                return f"retrying: {exc}"
            outcome = f"failed: {exc}"
        except GitHubError as exc:
            log.warning("delivery %s (%s): %s", delivery_id, name, exc)
            outcome = f"failed: {exc}"
        except Exception as exc:  # a bug: record it on the delivery rather than retry it forever
            log.exception("delivery %s (%s) failed", delivery_id, name)
            outcome = f"error: {type(exc).__name__}: {exc}"
        log.info("delivery %s (%s): %s", delivery_id, name, outcome)
        return await self._finish(delivery_id, outcome, ingress.task_id)

    async def _finish(self, delivery_id: str, outcome: str, task_id: str | None) -> str:
        async with self.svc.sessions.begin() as session:
            await session.execute(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id, col(Delivery.outcome) == RECEIVED)
                .values(outcome=outcome[:255], task_id=task_id)
            )
        return outcome
