"""The REST API: tasks, runs and their event streams."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.budget import Budget
from core.inputs import MAX_OFFSET, MAX_SEQ, SafeText, SafeTime
from core.links import TaskLinks
from core.models import Task, TaskSource
from core.tasks import NewTask, TaskFilter
from web.deps import ServicesDep, require_token
from web.events import DEFAULT_PAGE, MAX_PAGE, events_after, follow_events

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)], tags=["tasks"])


class TaskCreate(BaseModel):
    """Body of ``POST /api/tasks``."""

    model_config = ConfigDict(extra="forbid")

    repo: SafeText = Field(min_length=1, max_length=1000, description="a local path or git URL")
    instructions: SafeText = Field(min_length=1, max_length=100_000)
    agent: SafeText | None = Field(default=None, max_length=100, description="agent profile name")
    base_ref: SafeText | None = Field(default=None, max_length=255)
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
    body["links"] = TaskLinks.of(task).public()
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
    repo: Annotated[SafeText | None, Query(max_length=1000)] = None,
    state: Annotated[SafeText | None, Query(max_length=32)] = None,
    source: Annotated[SafeText | None, Query(max_length=32)] = None,
    requester: Annotated[SafeText | None, Query(max_length=255)] = None,
    since: SafeTime | None = None,
    until: SafeTime | None = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
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

    text: SafeText = Field(min_length=1, max_length=100_000)


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
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="only events with a larger seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="events per page")] = DEFAULT_PAGE,
    accept: Annotated[str | None, Header(max_length=1000)] = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> dict[str, Any] | StreamingResponse:
    """A page of the run's events as JSON, or server-sent events that follow a live run.

    JSON pages hold at most ``limit`` events after ``after``: ``next_after`` is the cursor for the
    next page and ``more`` says whether that page has events already. Server-sent events resume
    from ``Last-Event-ID`` (or ``after``) and end with an ``end`` event once the run has ended.
    """
    run = await svc.tasks.get_run(run_id)
    if accept and "text/event-stream" in accept:
        start = after
        if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
            start = min(int(last_event_id), MAX_SEQ)
        return StreamingResponse(
            follow_events(svc, run_id, start, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    events = await events_after(svc.sessions, run_id, after, limit=limit + 1)
    page = events[:limit]
    return {
        "run_id": run.id,
        "outcome": run.outcome,
        "items": [e.wire() for e in page],
        "next_after": page[-1].seq if page else after,
        "more": len(events) > limit,
    }
