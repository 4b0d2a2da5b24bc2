"""``POST /slack/events``: verify, record, enqueue, answer — the way GitHub's webhooks are taken in.

Nothing slow happens before the answer. In order, and nothing from an unverified body is parsed,
logged or acted on:

1. a body over 1 MiB → 413, read with a cap (never buffered whole);
2. a missing, stale or wrong v0 signature → 401;
3. the body is read (:mod:`bot.requests`): what Handoff does not act on, ``help`` and malformed
   bodies are answered at once with a 2xx — Slack retries anything else;
4. one ``Delivery`` row keyed by the request's own id (``ev:<event_id>``, ``cmd:<trigger_id>``,
   ``act:<trigger_id>``), holding the request, is committed — a repeat finds it and is answered
   without doing anything; the command is durable from here, whatever happens to Redis;
5. the ``slack_ingest`` job (id = the delivery) is queued;
6. the answer: a slash command's acknowledgement text, or an empty 200.

Concurrent requests share round trips (:class:`core.batching.GroupCommit`): one multi-row INSERT
and one Redis pipeline per burst, each request answered only after its own row and job exist.
Parsing, the allow-list, task creation and the first message happen in the job. If the database or
Redis is down, an event is answered 503 (Slack retries it); a slash command gets an ephemeral
"try again" (Slack never retries those).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from psycopg.types.json import Json
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from bot.requests import Accepted, Answered, RequestReader, ephemeral, log_answer
from bot.signature import SlackSignature
from core.batching import GroupCommit
from core.bodies import read_capped
from core.clock import utcnow
from core.db import make_engine
from core.errors import DatabaseUnavailable, DependencyUnavailable, QueueUnavailable
from core.models import Delivery
from core.ports import JobRequest
from core.sql import insert_ignore_statement

log = logging.getLogger(__name__)

# Slack payloads are a few kB; refuse to buffer anything absurd before the signature check.
MAX_BODY = 1024 * 1024
INGEST_JOB = "slack_ingest"
RECEIVED = "received"
RECORD_TIMEOUT_S = 2.5  # Slack waits 3 s
TRY_AGAIN = "Handoff could not take this right now ({what} unavailable). Nothing was started; please try again shortly."


class JobQueue(Protocol):
    """Queues jobs (``core.ports.Queue.enqueue_jobs``)."""

    async def enqueue_jobs(self, jobs: list[JobRequest]) -> list[bool]:
        """Queue ``jobs`` in one round trip."""
        ...


class ThreadCheck(Protocol):
    """Whether a thread belongs to a task (only replies in task threads are recorded)."""

    async def __call__(self, team: str | None, channel: str, thread_ts: str) -> bool:
        """True for a task's thread."""
        ...


def job_id(queue_name: str, delivery_id: str) -> str:
    """The arq job id of a delivery (arq's ids are global: the queue name keeps queues apart)."""
    return f"{queue_name}:slack:{delivery_id}"


def ingest_job(queue_name: str, delivery_id: str) -> JobRequest:
    """The job that handles the recorded request ``delivery_id`` (its row holds the request)."""
    return JobRequest(job_id(queue_name, delivery_id), INGEST_JOB, (delivery_id,))


class SlackIngress:
    """The endpoint's logic (and Socket Mode's: :meth:`accept`), independent of how it is mounted."""

    def __init__(
        self,
        reader: RequestReader,
        verifier: SlackSignature | None,
        database_url: str,
        queue: JobQueue,
        queue_name: str,
        in_task_thread: ThreadCheck,
    ) -> None:
        self.reader = reader
        self.verifier = verifier
        self.queue_name = queue_name
        self.in_task_thread = in_task_thread
        # Its own pool, tuned for one statement per request (as GitHub's webhook endpoint's):
        # autocommit, no pre-ping, no reset on return; a fixed size so bursts reuse connections.
        pool: dict[str, Any] = (
            {"pool_size": 16, "max_overflow": 0} if database_url.startswith("postg") else {}
        )
        self.engine: AsyncEngine = make_engine(
            database_url, isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_reset_on_return=None, **pool
        )
        self.insert = insert_ignore_statement(self.engine.dialect.name, Delivery, ["id"])
        self.rows: GroupCommit[dict[str, Any], bool] = GroupCommit(self._insert_many)
        self.jobs: GroupCommit[JobRequest, bool] = GroupCommit(queue.enqueue_jobs)

    async def aclose(self) -> None:
        """Finish the writes in flight and close the pool (at shutdown)."""
        await self.rows.aclose()
        await self.jobs.aclose()
        await self.engine.dispose()

    # -- HTTP ------------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        """Handle one HTTP request from Slack."""
        body = await read_capped(request.headers, request.stream(), MAX_BODY)
        if body is None:
            return JSONResponse({"error": "request too large"}, status_code=413)
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if self.verifier is None or not self.verifier.valid(body, timestamp, signature):
            return JSONResponse({"error": "invalid request"}, status_code=401)
        read = self.reader.read(body, request.headers.get("content-type", ""))
        if isinstance(read, Answered):
            log_answer(log, read, "http")
            return _json(read.body)
        try:
            await self.accept(read)
        except DependencyUnavailable as exc:
            log.warning("slack %s (%s): %s", read.delivery_id, read.event, exc)
            if read.event == "slash_command":  # never retried by Slack: tell the person
                return _json(ephemeral(TRY_AGAIN.format(what=exc.service)))
            return JSONResponse(
                {"error": f"{exc.service} unavailable"}, status_code=503, headers={"Retry-After": "5"}
            )
        return _json(read.ack)

    # -- shared with Socket Mode -----------------------------------------------------------------

    async def accept(self, accepted: Accepted) -> bool:
        """Record ``accepted`` and queue its job; ``False`` when it is a repeat (or not for us).

        Raises :class:`DependencyUnavailable` when the database or Redis does not answer in time."""
        try:
            async with asyncio.timeout(RECORD_TIMEOUT_S):
                return await self._record(accepted)
        except TimeoutError as exc:
            raise DatabaseUnavailable("too slow to record the request") from exc
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    async def _record(self, accepted: Accepted) -> bool:
        if accepted.event == "thread_reply":
            event = accepted.payload.get("event") or {}
            channel, thread = str(event.get("channel", "")), str(event.get("thread_ts", ""))
            if not await self.in_task_thread(accepted.team_id, channel, thread):
                return False  # a conversation of people, not a task's thread
        row = {
            "id": accepted.delivery_id,
            "source": "slack",
            "event": accepted.event,
            "team_id": accepted.team_id,
            "outcome": RECEIVED,
            "received_at": utcnow(),
            "payload": accepted.payload,
        }
        job = ingest_job(self.queue_name, accepted.delivery_id)
        if await self.rows.submit(row):
            try:
                await self.jobs.submit(job)
            except QueueUnavailable:
                if accepted.event == "slash_command":
                    # The person is told nothing started (Slack never retries a command): make
                    # sure nothing does, later, when a sweep finds the row.
                    await self._settle(accepted.delivery_id, "dropped: redis unavailable")
                raise
            return True
        # Seen before (Slack's retry): queue the job again only if it never finished (the first
        # attempt may have missed Redis); the job id makes that a no-op otherwise.
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(col(Delivery.outcome)).where(col(Delivery.id) == accepted.delivery_id)
            )
            if found.scalar_one_or_none() == RECEIVED:
                await self.jobs.submit(job)
        log.info("slack delivery %s already recorded; not handling the repeat", accepted.delivery_id)
        return False

    async def _settle(self, delivery_id: str, outcome: str) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(
                update(Delivery).where(col(Delivery.id) == delivery_id).values(outcome=outcome)
            )

    async def _insert_many(self, rows: list[dict[str, Any]]) -> list[bool]:
        """Insert delivery rows; for each, False when it already existed (or repeats one before it)."""
        unique = list({row["id"]: row for row in reversed(rows)}.values())
        inserted: set[str] = set()
        async with self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                # The hot path: one multi-row INSERT on psycopg directly (SQLAlchemy's execution
                # layer costs a third of the time), on a connection of the same pool.
                raw = await conn.get_raw_connection()
                driver: Any = raw.driver_connection
                columns = ("id", "source", "event", "team_id", "outcome", "received_at")
                values = [(*(r[c] for c in columns), Json(r["payload"])) for r in unique]
                sql = _PG_INSERT.format(values=", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(values)))
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


_PG_INSERT = (
    "INSERT INTO delivery (id, source, event, team_id, outcome, received_at, payload) VALUES {values} "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)


def _json(body: dict[str, Any] | None) -> Response:
    if body is None:
        return Response(status_code=200)
    return JSONResponse(body)
