"""The dashboard pages: tasks, a task and its runs, the overview; and the Cancel / Retry buttons."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from core.errors import InvalidTransition, NotFound
from core.inputs import SafeText
from core.links import AutomationLinks, TaskLinks
from core.models import Run, Task, TaskSource
from core.services import Services
from core.snapshot import load_snapshot
from core.states import TaskState
from core.tasks import TaskFilter
from core.usage import TokenUsage
from web.dashboard import charts, queries
from web.dashboard.auth import dashboard, redirect
from web.dashboard.diff import branch_diff
from web.dashboard.events import views
from web.dashboard.session import PageError, Session, check_csrf
from web.dashboard.state import Dashboard, Viewer

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
# Link keys a task may carry, in the order they are shown.
SOURCE_LINKS = (
    ("issue_url", "Issue"),
    ("pr_url", "Pull request"),
    ("comment_url", "Comment"),
    ("slack_permalink", "Slack thread"),
)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _begin(request: Request) -> tuple[Dashboard, Session, Viewer, Services]:
    dash = dashboard(request)
    session = dash.codec.load(request)
    return dash, session, dash.require(request, session), _services(request)


@router.get("/")
async def home() -> RedirectResponse:
    """The tasks list is the home page."""
    return RedirectResponse("/tasks", status_code=303)


def _date(value: str | None, *, end: bool = False) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
        # ``until`` names the last day wanted, so the bound is the start of the next one.
        return datetime.combine(day + timedelta(days=1 if end else 0), time(), tzinfo=UTC)
    except (ValueError, OverflowError):  # not a date, or 9999-12-31 as ``until``: no bound
        return None


@router.get("/tasks")
async def tasks_page(
    request: Request,
    repo: Annotated[SafeText | None, Query(max_length=1000)] = None,
    state: Annotated[SafeText | None, Query(max_length=32)] = None,
    source: Annotated[SafeText | None, Query(max_length=32)] = None,
    requester: Annotated[SafeText | None, Query(max_length=255)] = None,
    since: Annotated[SafeText | None, Query(max_length=10)] = None,
    until: Annotated[SafeText | None, Query(max_length=10)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> HTMLResponse:
    """Tasks the viewer may see, newest first, with filters; how many run and wait on top."""
    dash, session, viewer, services = _begin(request)
    scope = await dash.scope(services, viewer)
    filters = TaskFilter(
        repo=repo or None,
        state=state or None,
        source=source or None,
        requester=requester or None,
        since=_date(since),
        until=_date(until, end=True),
    )
    # Counted from the tasks, not the arq queue (which also holds integration jobs and repeats).
    (items, total), counts = await asyncio.gather(
        queries.list_tasks(services.tasks, filters, scope, offset=offset, limit=PAGE_SIZE),
        queries.count_states(services.sessions, scope, ("running", "queued", "waiting")),
    )
    repos = sorted(scope) if scope is not None else sorted(await queries.known_repos(services.sessions))
    params = {"repo": repo, "state": state, "source": source, "requester": requester}
    params |= {"since": since, "until": until}
    return dash.page(
        request,
        session,
        "tasks.html",
        viewer=viewer,
        tasks=items,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        counts=counts,
        params=params,
        repos=repos,
        states=[s.value for s in TaskState],
        sources=[s.value for s in TaskSource],
    )


@router.get("/runs/{run_id}")
async def run_link(request: Request, run_id: str) -> RedirectResponse:
    """A stable link to one run (for check runs and Slack buttons): its task page, that run selected."""
    dash, _session, viewer, services = _begin(request)
    try:
        run = await services.tasks.get_run(run_id)
    except NotFound:
        raise PageError(404, "No such run.") from None
    await dash.visible_task(services, viewer, run.task_id)
    return RedirectResponse(f"/tasks/{run.task_id}?run={run.id}", status_code=303)


def _select(runs: list[Run], run_id: str | None) -> Run | None:
    if run_id is not None:
        chosen = next((r for r in runs if r.id == run_id), None)
        if chosen is None:
            raise PageError(404, "No such run.")
        return chosen
    return runs[-1] if runs else None


def source_links(task: Task) -> list[tuple[str, Any]]:
    """``(label, url)`` of where the task came from and what it produced."""
    links = TaskLinks.of(task)
    if task.pr_url and links.pr_url is None:
        links = links.with_(pr_url=task.pr_url)
    shown = [(label, getattr(links, key)) for key, label in SOURCE_LINKS]
    return [(label, url) for label, url in shown if url]


async def status_context(
    dash: Dashboard, viewer: Viewer, services: Services, task: Task, runs: list[Run], run: Run | None
) -> dict[str, Any]:
    """What the status fragment (header, metrics, runs) needs; also used by the live stream.

    The run's tokens and cost come from the task snapshot, as GitHub and Slack show them (live
    while the run goes)."""
    snap = await load_snapshot(services.sessions, task.id, run_id=run.id) if run is not None else None
    return {
        "task": task,
        "runs": runs,
        "run": run,
        "usage": snap.usage if snap is not None else TokenUsage(),
        "can_act": await dash.can_act(viewer, task),
        "total_cost": sum(r.cost_usd for r in runs),
        "links": source_links(task),
        "automation": AutomationLinks.of(task),
    }


@router.get("/tasks/{task_id}")
async def task_page(
    request: Request,
    task_id: str,
    run: Annotated[SafeText | None, Query(max_length=40)] = None,
    notice: Annotated[SafeText | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    """A task: its state, source, runs; the selected run's live log, metrics and diff."""
    dash, session, viewer, services = _begin(request)
    await dash.visible_task(services, viewer, task_id)
    task, runs = await queries.task_and_runs(services.sessions, task_id)
    if task is None:
        raise PageError(404, "No such task.")
    selected = _select(runs, run)
    events, hidden = await queries.recent_events(
        services.sessions, task_id, selected.id if selected else None
    )
    live = not TaskState(task.state).terminal or (selected is not None and selected.outcome == "running")
    last_seq = max((e.seq for e in events), default=0)
    live_url = None
    if live:
        follow = "&follow=1" if run is None else ""
        live_url = f"/tasks/{task.id}/live?run={selected.id if selected else ''}&after={last_seq}{follow}"
    diff = await branch_diff(task, selected, dash.settings.github_web_url)
    return dash.page(
        request,
        session,
        "task.html",
        viewer=viewer,
        events=views(events),
        hidden=hidden,
        live_url=live_url,
        diff=diff,
        notice=_NOTICES.get(notice or ""),
        **await status_context(dash, viewer, services, task, runs, selected),
    )


@router.get("/tasks/{task_id}/diff")
async def diff_fragment(
    request: Request, task_id: str, run: Annotated[SafeText | None, Query(max_length=40)] = None
) -> HTMLResponse:
    """The diff section alone (the page reloads it when a live run ends)."""
    dash, session, viewer, services = _begin(request)
    await dash.visible_task(services, viewer, task_id)
    task, runs = await queries.task_and_runs(services.sessions, task_id)
    assert task is not None
    selected = _select(runs, run or None)
    diff = await branch_diff(task, selected, dash.settings.github_web_url)
    return dash.page(request, session, "_diff.html", viewer=viewer, task=task, run=selected, diff=diff)


_NOTICES = {
    "cancel-refused": "This task has already ended; there is nothing to cancel.",
    "retry-refused": "Only an ended task can be retried.",
    "cancelling": "Cancelling: the run stops within seconds.",
}


async def _act(request: Request, task_id: str, action: str) -> Response:
    dash = dashboard(request)
    session = dash.codec.load(request)
    # The token first: a POST without it is refused the same way, signed in or not.
    await check_csrf(request, session)
    viewer, services = dash.require(request, session), _services(request)
    task = await dash.visible_task(services, viewer, task_id)
    if not await dash.can_act(viewer, task):
        raise PageError(403, "Only the requester or people with write access may do this.")
    notice = "cancelling" if action == "cancel" else None
    try:
        if action == "cancel":
            await services.tasks.cancel(task_id, actor=viewer.actor)
        else:
            await services.tasks.retry(task_id, actor=viewer.actor)
    except InvalidTransition:
        notice = f"{action}-refused"
    if action == "retry" and notice is None:
        # A new run is coming: show the task page afresh, which follows it as it starts.
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": f"/tasks/{task_id}"})
        return redirect(dash, f"/tasks/{task_id}")
    if request.headers.get("hx-request"):
        fresh, runs = await queries.task_and_runs(services.sessions, task_id)
        assert fresh is not None
        shown = (await request.form()).get("run")
        selected = next((r for r in runs if r.id == shown), runs[-1] if runs else None)
        context = await status_context(dash, viewer, services, fresh, runs, selected)
        return dash.page(
            request, session, "_status.html", viewer=viewer, notice=_NOTICES.get(notice or ""), **context
        )
    return redirect(dash, f"/tasks/{task_id}" + (f"?notice={notice}" if notice else ""))


@router.post("/tasks/{task_id}/cancel")
async def cancel(request: Request, task_id: str) -> Response:
    """Cancel the task (a running one is stopped by its worker within seconds)."""
    return await _act(request, task_id, "cancel")


@router.post("/tasks/{task_id}/retry")
async def retry(request: Request, task_id: str) -> Response:
    """Queue a new run of an ended task."""
    return await _act(request, task_id, "retry")


@router.get("/overview")
async def overview(request: Request, days: Annotated[int, Query(ge=7, le=90)] = 14) -> HTMLResponse:
    """Runs per day by outcome, median duration and cost per repository; and the command help."""
    dash, session, viewer, services = _begin(request)
    scope = await dash.scope(services, viewer)
    today = datetime.now(UTC).date()
    since = datetime.combine(today - timedelta(days=days - 1), time(), tzinfo=UTC)
    rows = await queries.runs_since(services.sessions, since, scope)
    median, median_chart = charts.median_duration(rows, today, days)
    phone = charts.PHONE_WIDTH
    registry = services.commands
    finished = [r for r in rows if r.outcome != "running"]
    return dash.page(
        request,
        session,
        "overview.html",
        viewer=viewer,
        days=days,
        runs=len(rows),
        succeeded=sum(1 for r in finished if r.outcome == "succeeded"),
        finished=len(finished),
        cost=sum(r.cost_usd for r in rows),
        median=median,
        per_day=charts.runs_per_day(rows, today, days),
        median_chart=median_chart,
        per_repo=charts.cost_per_repo(rows),
        # The same charts drawn for a phone's width (CSS shows one or the other).
        per_day_phone=charts.runs_per_day(rows, today, days, width=phone),
        median_phone=charts.median_duration(rows, today, days, width=phone)[1],
        per_repo_phone=charts.cost_per_repo(rows, width=phone),
        outcomes=[o for o in charts.OUTCOMES if any(r.outcome == o for r in rows)],
        commands=registry.specs,
        help_text=registry.help_for("github"),
    )
