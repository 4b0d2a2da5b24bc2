"""``POST /github/webhooks``: verify, record durably, hand to a job, answer — in milliseconds.

Order matters and nothing from an unverified body is logged, parsed into the database or acted on:

1. body over 25 MB → 413 (read with a cap: never buffer an unbounded body)
2. ``X-Hub-Signature-256`` missing or wrong under every configured secret → 401 (SHA-1 alone → 401)
3. ``X-GitHub-Event`` / ``X-GitHub-Delivery`` missing → 400; not ``application/json`` → 415; bad JSON → 400
4. a ``Delivery`` row keyed by the delivery GUID is committed — a repeat finds it and answers 200
5. a routed event is enqueued as an arq job whose id is the GUID (a repeat enqueue is a no-op)
6. 202; if the database or Redis fails, 503 (GitHub shows the failure; the reconciler redelivers)

Concurrent deliveries share round trips (:mod:`core.batching`): one multi-row INSERT and one
Redis pipeline per burst, each request still answered only after its own row and job are written.

A repeat of a delivery whose job may never have been queued (Redis was down the first time) is
enqueued again — idempotent by job id — so a redelivery always completes what the first attempt began.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from core.batching import GroupCommit
from core.bodies import read_capped
from core.clock import utcnow
from core.db import make_engine
from core.errors import DependencyUnavailable
from core.models import Delivery
from core.sql import insert_ignore_statement
from github_app.routing import EventRegistry, Screening
from github_app.signature import HEADER, verify

log = logging.getLogger(__name__)

MAX_BODY = 25 * 1024 * 1024
RECORD_TIMEOUT_S = 8.0
RECEIVED = "received"


class JobSink(Protocol):
    """Queues ``github_ingest`` jobs (``github_app.ingest.ArqEnqueue``)."""

    async def many(self, jobs: list[tuple[str, str, dict[str, Any]]]) -> list[bool]:
        """Queue (delivery id, "event.action", slim payload) jobs in one round trip."""
        ...


def _answer(status: int, detail: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


class WebhookReceiver:
    """The webhook endpoint's logic, independent of how it is mounted."""

    def __init__(
        self,
        secrets: Sequence[str],
        database_url: str,
        jobs: JobSink,
        events: EventRegistry,
        screening: Screening,
    ) -> None:
        self.secrets = list(secrets)
        self.events = events
        self.screening = screening
        # Its own small pool, tuned for one statement per request: autocommit (a single round trip
        # makes the row durable, no BEGIN/COMMIT), no pre-ping and no reset on return (two more
        # round trips each). After a database restart the first request fails with a 503 and its
        # dead connection is dropped; GitHub's failure is then redelivered by the reconciler.
        pool: dict[str, Any] = (
            {"pool_size": 16, "max_overflow": 0} if database_url.startswith("postg") else {}
        )
        # A fixed pool: overflow connections would be opened and closed under every burst.
        self.engine: AsyncEngine = make_engine(
            database_url, isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_reset_on_return=None, **pool
        )
        # Compiled once and cached: the values go as parameters.
        self.insert = insert_ignore_statement(self.engine.dialect.name, Delivery, ["id"])
        # Concurrent deliveries share round trips: one INSERT and one Redis pipeline per burst.
        self.rows: GroupCommit[dict[str, Any], bool] = GroupCommit(self._insert_many)
        self.jobs: GroupCommit[tuple[str, str, dict[str, Any]], bool] = GroupCommit(jobs.many)

    async def _insert_many(self, rows: list[dict[str, Any]]) -> list[bool]:
        """Insert delivery rows; for each, False when it already existed (or repeats one before it)."""
        unique = list({row["id"]: row for row in reversed(rows)}.values())
        inserted: set[str] = set()
        async with self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                # The endpoint's hot path: psycopg directly (SQLAlchemy's execution layer costs a
                # third of the time), on a connection from the same pool.
                raw = await conn.get_raw_connection()
                driver: Any = raw.driver_connection
                values = [(r["id"], r["source"], r["event"], r["outcome"], r["received_at"]) for r in unique]
                sql = _PG_INSERT.format(values=", ".join(["(%s, %s, %s, %s, %s)"] * len(values)))
                async with driver.cursor() as cursor:
                    await cursor.execute(sql, [v for row in values for v in row])
                    inserted = {str(r[0]) for r in await cursor.fetchall()}
            else:
                for row in unique:
                    if (await conn.execute(self.insert, row)).all():
                        inserted.add(row["id"])
        seen: set[str] = set()
        results = []
        for row in rows:
            results.append(row["id"] in inserted and row["id"] not in seen)
            seen.add(row["id"])
        return results

    async def aclose(self) -> None:
        """Finish the writes in flight and close the pool (at shutdown: one of its ``Integration.closers``)."""
        await self.rows.aclose()
        await self.jobs.aclose()
        await self.engine.dispose()

    async def __call__(self, request: Request) -> JSONResponse:
        """Handle one delivery."""
        body = await read_capped(request.headers, request.stream(), MAX_BODY)
        if body is None:
            return _answer(413, "payload too large")
        if not verify(self.secrets, body, request.headers.get(HEADER)):
            return _answer(401, "missing or invalid X-Hub-Signature-256")
        event = request.headers.get("x-github-event", "").strip()
        delivery = request.headers.get("x-github-delivery", "").strip()
        if not event or not delivery or len(delivery) > 255 or len(event) > 64 or not delivery.isprintable():
            return _answer(400, "X-GitHub-Event and X-GitHub-Delivery are required")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return _answer(415, "only application/json deliveries are accepted")
        try:
            payload = json.loads(body)
        except ValueError:
            return _answer(400, "body is not valid JSON")
        screened = self.events.screen(event, payload, self.screening)
        try:
            async with asyncio.timeout(RECORD_TIMEOUT_S):
                return await self._record(delivery, screened.name, screened.ignored, screened.slim)
        except TimeoutError:
            # GitHub gives up at 10 s; a 503 now is better than a timeout it cannot tell apart.
            log.warning(
                "delivery %s (%s): recording took over %g s", delivery, screened.name, RECORD_TIMEOUT_S
            )
            return _answer(503, "dependencies too slow")
        except (SQLAlchemyError, OSError) as exc:
            log.warning("delivery %s (%s): database unavailable: %s", delivery, screened.name, exc)
            return _answer(503, "database unavailable")
        except DependencyUnavailable as exc:
            log.warning("delivery %s (%s): %s", delivery, screened.name, exc)
            return _answer(503, f"{exc.service} unavailable")

    async def _record(
        self, delivery: str, name: str, ignored: str | None, slim: dict[str, Any] | None
    ) -> JSONResponse:
        row = {
            "id": delivery,
            "source": "github",
            "event": name[:100],
            "outcome": ignored or RECEIVED,
            "received_at": utcnow(),
        }
        inserted = await self.rows.submit(row)
        if not inserted:
            async with self.engine.connect() as conn:
                found = await conn.execute(select(col(Delivery.outcome)).where(col(Delivery.id) == delivery))
                outcome = found.scalar_one_or_none()
            if outcome == RECEIVED and slim is not None:
                await self.jobs.submit((delivery, name, slim))  # the first attempt may have missed Redis
            return _answer(200, "duplicate delivery", duplicate=True)
        if slim is not None:
            await self.jobs.submit((delivery, name, slim))
            return _answer(202, "queued")
        return _answer(202, ignored or "ignored")


_PG_INSERT = (
    "INSERT INTO delivery (id, source, event, outcome, received_at) VALUES {values} "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)


def webhook_router(receiver: WebhookReceiver, path: str = "/github/webhooks") -> APIRouter:
    """A router with the webhook endpoint (excluded from the OpenAPI schema: it is not for people)."""
    router = APIRouter(tags=["github"])

    async def github_webhook(request: Request) -> JSONResponse:
        return await receiver(request)

    router.add_api_route(path, github_webhook, methods=["POST"], include_in_schema=False, response_model=None)
    return router
