"""The REST API: tasks, runs and their event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlmodel import col

from core.config import Budget
from core.models import RunEvent, Task, TaskSource
from core.states import RunOutcome
from core.tasks import NewTask, TaskFilter
from web.deps import ServicesDep, require_token

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)], tags=["tasks"])


class TaskCreate(BaseModel):
    """Body of ``POST /api/tasks``."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(min_length=1, max_length=1000, description="a local path or git URL")
    instructions: str = Field(min_length=1, max_length=100_000)
    agent: str | None = Field(default=None, max_length=100, description="agent profile name")
    base_ref: str | None = Field(default=None, max_length=255)
    budget: Budget | None = Field(default=None, description="tighten the server's budgets for this task")

    @field_validator("repo", "instructions")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def task_json(task: Task, runs: list[Any] | None = None) -> dict[str, Any]:
    """The API representation of a task (and its runs)."""
    body = task.model_dump(mode="json", exclude={"event_seq"})
    # The built-in agent's saved conversation can be large and is not the API's business.
    body["links"] = {k: v for k, v in body["links"].items() if k != "conversation"}
    if runs is not None:
        body["runs"] = [run_json(r) for r in runs]
    return body


def run_json(run: Any) -> dict[str, Any]:
    """The API representation of a run."""
    body: dict[str, Any] = run.model_dump(mode="json")
    body["duration_s"] = run.duration_s
    return body


@router.post("/tasks", status_code=201)
async def create_task(body: TaskCreate, svc: ServicesDep) -> dict[str, Any]:
    """Create a task and queue its first run."""
    task, _created = await svc.tasks.create(
        NewTask(
            repo=body.repo,
            instructions=body.instructions,
            agent=body.agent,
            base_ref=body.base_ref,
            budget=body.budget.model_dump(exclude_none=True) if body.budget else {},
            source=TaskSource.api,
            requester="api",
        )
    )
    return task_json(task)


@router.get("/tasks")
async def list_tasks(
    svc: ServicesDep,
    repo: str | None = None,
    state: str | None = None,
    source: str | None = None,
    requester: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """A page of tasks, newest first: ``{"items": [...], "total": n}``."""
    items, total = await svc.tasks.list(
        TaskFilter(repo=repo, state=state, source=source, requester=requester, since=since, until=until),
        offset=offset,
        limit=limit,
    )
    return {"items": [task_json(t) for t in items], "total": total, "offset": offset, "limit": limit}


@router.get("/tasks/{task_id}")
async def get_task(task_id: str, svc: ServicesDep) -> dict[str, Any]:
    """One task with its runs."""
    task = await svc.tasks.get(task_id)
    return task_json(task, await svc.tasks.runs(task_id))


@router.post("/tasks/{task_id}/cancel")
async def cancel_task(task_id: str, svc: ServicesDep) -> dict[str, Any]:
    """Cancel a task (a running one is stopped within seconds)."""
    return task_json(await svc.tasks.cancel(task_id, actor="api"))


@router.post("/tasks/{task_id}/retry")
async def retry_task(task_id: str, svc: ServicesDep) -> dict[str, Any]:
    """Queue a new run of an ended task."""
    return task_json(await svc.tasks.retry(task_id, actor="api"))


class FollowUp(BaseModel):
    """Body of ``POST /api/tasks/{id}/followup``."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=100_000)


@router.post("/tasks/{task_id}/followup")
async def follow_up(task_id: str, body: FollowUp, svc: ServicesDep) -> dict[str, Any]:
    """More instructions for a task (or the answer to its agent's question): run after the current
    run, or now on the same branch when the task has ended."""
    return task_json(await svc.tasks.follow_up(task_id, body.text, actor="api"))


@router.get("/runs/{run_id}/events", response_model=None)
async def run_events(
    run_id: str,
    request: Request,
    svc: ServicesDep,
    after: Annotated[int, Query(ge=0, description="only events with a larger seq")] = 0,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> dict[str, Any] | StreamingResponse:
    """The events of a run as JSON, or as server-sent events that follow a live run."""
    run = await svc.tasks.get_run(run_id)
    if accept and "text/event-stream" in accept:
        start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after
        return StreamingResponse(
            _follow(svc, run_id, start, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    events = await _events_after(svc, run_id, after, limit=10_000)
    return {"run_id": run.id, "outcome": run.outcome, "items": [e.wire() for e in events]}


async def _events_after(svc: ServicesDep, run_id: str, after: int, limit: int = 500) -> list[RunEvent]:
    async with svc.sessions() as session:
        rows = await session.execute(
            select(RunEvent)
            .where(col(RunEvent.run_id) == run_id, col(RunEvent.seq) > after)
            .order_by(col(RunEvent.seq))
            .limit(limit)
        )
        return list(rows.scalars())


async def _follow(svc: ServicesDep, run_id: str, after: int, request: Request) -> AsyncIterator[str]:
    """Yield SSE frames for new events until the run has ended and everything was sent."""
    last = after
    idle = 0.0
    while True:
        events = await _events_after(svc, run_id, last)
        for event in events:
            last = event.seq
            yield f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.wire())}\n\n"
        if events:
            idle = 0.0
            continue
        run = await svc.tasks.get_run(run_id)
        if run.outcome != RunOutcome.running.value:
            # One last read: events written just before the run was closed.
            tail = await _events_after(svc, run_id, last)
            for event in tail:
                last = event.seq
                yield f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.wire())}\n\n"
            yield f"event: end\ndata: {json.dumps({'outcome': run.outcome})}\n\n"
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.1)
        idle += 0.1
        if idle >= 15:
            idle = 0.0
            yield ": keep-alive\n\n"
