"""The run page's live stream: server-sent events carrying HTML rendered (and escaped) here.

``GET /tasks/{id}/live?run=...&after=seq`` sends

- ``log``: new ``<li>`` lines of the run's event log (the SSE id is the last sequence number, so a
  reconnecting browser resumes with ``Last-Event-ID`` and misses nothing);
- ``status``: the task's header, metrics and run list, whenever any of them changes;
- ``newrun``: the address of a newer run, when the page follows the latest run (``follow=1``);
- ``end``: the run has ended and nothing more will come.

It is the dashboard's own route rather than ``/api/runs/{id}/events`` because it authenticates with
the session cookie and sends markup, so the browser needs no template code of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from core.db import is_database_outage
from core.inputs import MAX_SEQ, SafeText
from core.models import Run, Task
from core.services import Services
from core.states import TaskState
from web.dashboard import queries
from web.dashboard.auth import dashboard
from web.dashboard.events import views
from web.dashboard.routes import status_context
from web.dashboard.session import PageError
from web.dashboard.state import Dashboard, Viewer

router = APIRouter(include_in_schema=False)
POLL_S = 0.25
KEEPALIVE_S = 15.0
# A stream is closed after this long; the browser reconnects and resumes from its last id.
MAX_STREAM_S = 1800.0


def frame(event: str, data: str, id_: int | None = None) -> str:
    """One SSE frame; every line of ``data`` gets its own ``data:`` prefix."""
    head = f"id: {id_}\n" if id_ is not None else ""
    body = "".join(f"data: {line}\n" for line in (data.splitlines() or [""]))
    return f"{head}event: {event}\n{body}\n"


@router.get("/tasks/{task_id}/live")
async def live(
    request: Request,
    task_id: str,
    run: Annotated[SafeText | None, Query(max_length=40)] = None,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    follow: bool = False,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Follow the task and its selected run (see the module docstring)."""
    dash = dashboard(request)
    session = dash.codec.load(request)
    viewer = dash.viewer(session)
    if viewer is None:
        raise PageError(401, "Sign in to follow this run.")
    services: Services = request.app.state.services
    await dash.visible_task(services, viewer, task_id)
    start = after
    if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
        start = min(int(last_event_id), MAX_SEQ)
    stream = _follow(request, dash, viewer, services, task_id, run or None, start, follow, session.csrf)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _fingerprint(task: Task, runs: list[Run]) -> tuple[object, ...]:
    return (
        task.state,
        task.state_reason,
        task.cancel_requested,
        task.pr_url,
        tuple((r.id, r.outcome, r.tokens_in, r.tokens_out, r.cost_usd, r.finished_at) for r in runs),
    )


async def _follow(
    request: Request,
    dash: Dashboard,
    viewer: Viewer,
    services: Services,
    task_id: str,
    run_id: str | None,
    last: int,
    follow: bool,
    csrf: str,
) -> AsyncIterator[str]:
    started = quiet_since = time.monotonic()
    state = _Followed(last)
    while time.monotonic() - started < MAX_STREAM_S:
        try:
            async for frame_ in _step(dash, viewer, services, task_id, run_id, follow, csrf, state):
                quiet_since = time.monotonic()
                yield frame_
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            # The database is away: keep the page's stream open and resume where it was.
            state.pause = min(state.pause * 2, 2.0)
        else:
            state.pause = POLL_S
        if state.ended or await request.is_disconnected():
            return
        if state.busy:
            continue  # more are waiting: no pause
        if time.monotonic() - quiet_since >= KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(state.pause)


@dataclass
class _Followed:
    """Where a live stream stands between two polls."""

    last: int
    seen: tuple[object, ...] | None = None
    ended: bool = False
    busy: bool = False
    pause: float = POLL_S


async def _step(
    dash: Dashboard,
    viewer: Viewer,
    services: Services,
    task_id: str,
    run_id: str | None,
    follow: bool,
    csrf: str,
    state: _Followed,
) -> AsyncIterator[str]:
    """One poll: new log lines, a changed status, a newer run, or the end."""
    events = await queries.events_after(services.sessions, task_id, run_id, state.last)
    state.busy = len(events) >= 200
    if events:
        state.last = events[-1].seq
        html = dash.render_text("_events.html", events=views(events))
        # Heartbeats render to nothing; still send the id so a reconnect starts after them.
        yield frame("log", html.strip(), state.last)
    task, runs = await queries.task_and_runs(services.sessions, task_id)
    if task is None:
        state.ended = True
        return
    selected = next((r for r in runs if r.id == run_id), None)
    fingerprint = _fingerprint(task, runs)
    if fingerprint != state.seen:
        state.seen = fingerprint
        context = await status_context(dash, viewer, services, task, runs, selected)
        yield frame("status", dash.render_text("_status.html", csrf=csrf, notice=None, **context))
    latest = runs[-1] if runs else None
    if follow and latest is not None and latest.id != run_id:
        state.ended = True
        yield frame("newrun", f"/tasks/{task_id}")
        return
    run_over = selected is None or selected.outcome != "running"
    if run_over and (TaskState(task.state).terminal or not follow):
        # A last read: events written just before the run was closed.
        while tail := await queries.events_after(services.sessions, task_id, run_id, state.last):
            state.last = tail[-1].seq
            yield frame("log", dash.render_text("_events.html", events=views(tail)).strip(), state.last)
        state.ended = True
        yield frame("end", task.state)
