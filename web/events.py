"""A run's events for the REST API: pages by sequence number, and a server-sent stream that follows.

A run may hold tens of thousands of events; nothing here reads more than one page (``MAX_PAGE``)
at a time. The stream survives the database going away: it keeps the connection open with
keep-alives and resumes from the last sequence number it sent once the database answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from fastapi import Request
from sqlalchemy import select
from sqlmodel import col

from core.db import Sessions, is_database_outage
from core.errors import DatabaseUnavailable
from core.models import RunEvent
from core.services import Services
from core.states import RunOutcome

log = logging.getLogger(__name__)

DEFAULT_PAGE = 500
MAX_PAGE = 1000
POLL_S = 0.1
KEEPALIVE_S = 15.0


async def events_after(
    sessions: Sessions, run_id: str, after: int, limit: int = DEFAULT_PAGE
) -> list[RunEvent]:
    """At most ``limit`` events of ``run_id`` with a sequence number above ``after``, in order."""
    async with sessions() as session:
        rows = await session.execute(
            select(RunEvent)
            .where(col(RunEvent.run_id) == run_id, col(RunEvent.seq) > after)
            .order_by(col(RunEvent.seq))
            .limit(limit)
        )
        return list(rows.scalars())


def sse(event: RunEvent) -> str:
    """One event as an SSE frame (its ``id`` is the sequence number, for ``Last-Event-ID``)."""
    return f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.wire())}\n\n"


async def follow_events(svc: Services, run_id: str, after: int, request: Request) -> AsyncIterator[str]:
    """Yield SSE frames for new events until the run has ended and everything was sent."""
    last = after
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    pause = POLL_S
    while True:
        try:
            events = await events_after(svc.sessions, run_id, last)
            outcome = None if events else (await svc.tasks.get_run(run_id)).outcome
        except Exception as exc:
            if not (isinstance(exc, DatabaseUnavailable) or is_database_outage(exc)):
                raise
            # The database is away: hold the stream open and try again (with backoff).
            log.info("event stream of run %s waits for the database: %s", run_id, type(exc).__name__)
            events, outcome, pause = [], RunOutcome.running.value, min(pause * 2, 2.0)
        else:
            pause = POLL_S
        for event in events:
            last = event.seq
            yield sse(event)
        if events:
            quiet_since = loop.time()
            continue
        if outcome is not None and outcome != RunOutcome.running.value:
            # A last read: events written just before the run was closed.
            while tail := await events_after(svc.sessions, run_id, last):
                for event in tail:
                    last = event.seq
                    yield sse(event)
            yield f"event: end\ndata: {json.dumps({'outcome': outcome})}\n\n"
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(pause)
        if loop.time() - quiet_since >= KEEPALIVE_S:
            quiet_since = loop.time()
            yield ": keep-alive\n\n"
