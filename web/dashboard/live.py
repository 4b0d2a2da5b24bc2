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
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from core.models import Run, Task
from core.states import TaskState
from web.dashboard import queries
from web.dashboard.auth import dashboard
from web.dashboard.context import Dashboard, Viewer
from web.dashboard.events import views
from web.dashboard.routes import status_context
from web.dashboard.session import PageError
from web.services import Services

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
    run: Annotated[str | None, Query(max_length=40)] = None,
    after: Annotated[int, Query(ge=0)] = 0,
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
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after
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
    seen: tuple[object, ...] | None = None
    while time.monotonic() - started < MAX_STREAM_S:
        events = await queries.events_after(services.sessions, task_id, run_id, last)
        if events:
            last = events[-1].seq
            html = dash.render_text("_events.html", events=views(events))
            # Heartbeats render to nothing; still send the id so a reconnect starts after them.
            yield frame("log", html.strip(), last)
            quiet_since = time.monotonic()
        task, runs = await queries.task_and_runs(services.sessions, task_id)
        if task is None:
            return
        selected = next((r for r in runs if r.id == run_id), None)
        fingerprint = _fingerprint(task, runs)
        if fingerprint != seen:
            seen = fingerprint
            context = await status_context(dash, viewer, task, runs, selected)
            yield frame("status", dash.render_text("_status.html", csrf=csrf, notice=None, **context))
        latest = runs[-1] if runs else None
        if follow and latest is not None and latest.id != run_id:
            yield frame("newrun", f"/tasks/{task_id}")
            return
        run_over = selected is None or selected.outcome != "running"
        if run_over and (TaskState(task.state).terminal or not follow):
            # One last read: events written just before the run was closed.
            tail = await queries.events_after(services.sessions, task_id, run_id, last)
            if tail:
                last = tail[-1].seq
                yield frame("log", dash.render_text("_events.html", events=views(tail)).strip(), last)
            yield frame("end", task.state)
            return
        if await request.is_disconnected():
            return
        if events and len(events) >= 200:
            continue  # more are waiting: no pause
        if time.monotonic() - quiet_since >= KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)
