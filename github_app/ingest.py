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
import time
from typing import Any

from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.exceptions import RedisError
from sqlalchemy import update
from sqlmodel import col

from core.errors import DependencyUnavailable, QueueUnavailable
from core.models import Delivery
from github_app.context import Ingress
from github_app.errors import GitHubError, GitHubRateLimited, GitHubUnavailable
from github_app.services import GitHubServices
from github_app.webhooks import RECEIVED

log = logging.getLogger(__name__)

INGEST_JOB = "github_ingest"
MAX_ATTEMPTS = 6


def job_id(queue_name: str, delivery_id: str, attempt: int = 1) -> str:
    """The arq job id: one job per delivery (and per retry of it), per queue (arq's ids are global)."""
    base = f"{queue_name}:github:{delivery_id}"
    return base if attempt == 1 else f"{base}:{attempt}"


# arq 0.28's enqueue (WATCH, EXISTS, MULTI, PSETEX, ZADD: two round trips) as one atomic script:
# the webhook waits for this, so it is one round trip. Same keys and job encoding as arq's own.
_ENQUEUE = """
if redis.call('exists', KEYS[1], KEYS[2]) == 0 then
  redis.call('psetex', KEYS[1], ARGV[1], ARGV[2])
  redis.call('zadd', KEYS[3], ARGV[3], ARGV[4])
  return 1
end
return 0
"""


class ArqEnqueue:
    """Queues ``github_ingest`` jobs on the arq queue (any object with ``async pool()``, e.g. ``ArqQueue``)."""

    def __init__(self, queue: Any, queue_name: str) -> None:
        self.queue = queue
        self.queue_name = queue_name

    async def __call__(
        self, delivery_id: str, name: str, slim: dict[str, Any], attempt: int = 1, defer_s: float = 0.0
    ) -> bool:
        """Queue the job (False: a job with its id exists); raise :class:`QueueUnavailable` when Redis is down."""
        pool = await self.queue.pool()
        jid = job_id(self.queue_name, delivery_id, attempt)
        now_ms = int(time.time() * 1000)
        score = now_ms + int(defer_s * 1000)
        job = serialize_job(
            INGEST_JOB, (delivery_id, name, slim, attempt), {}, None, now_ms, serializer=pool.job_serializer
        )
        keys = [job_key_prefix + jid, result_key_prefix + jid, self.queue_name]
        try:
            added = await pool.eval(
                _ENQUEUE, 3, *keys, score - now_ms + pool.expires_extra_ms, job, score, jid
            )
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"redis unavailable: {exc}") from exc
        return bool(added)

    async def many(self, jobs: list[tuple[str, str, dict[str, Any]]]) -> list[bool]:
        """Queue first attempts of several deliveries in one pipeline (one round trip)."""
        pool = await self.queue.pool()
        now_ms = int(time.time() * 1000)
        try:
            async with pool.pipeline(transaction=False) as pipe:
                for delivery_id, name, slim in jobs:
                    jid = job_id(self.queue_name, delivery_id)
                    job = serialize_job(
                        INGEST_JOB,
                        (delivery_id, name, slim, 1),
                        {},
                        None,
                        now_ms,
                        serializer=pool.job_serializer,
                    )
                    keys = [job_key_prefix + jid, result_key_prefix + jid, self.queue_name]
                    pipe.eval(_ENQUEUE, 3, *keys, pool.expires_extra_ms, job, now_ms, jid)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"redis unavailable: {exc}") from exc
        return [bool(r) for r in results]


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
