"""Reads a task, its latest run and that run's notable events into a :class:`~github_app.render.TaskView`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from core.clock import utcnow
from core.db import Sessions
from core.links import TaskLinks
from core.models import EventType, Run, RunEvent, Task
from github_app.render import TaskView

_NOTABLE = [EventType.status.value, EventType.progress.value, EventType.error.value, EventType.result.value]


class ViewLoader:
    """Builds views from the database (the notifier calls it at send time)."""

    def __init__(
        self,
        sessions: Sessions,
        task_url: Callable[[str], str],
        secret_patterns: Sequence[str] = (),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.task_url = task_url
        self.secret_patterns = list(secret_patterns)
        self.clock = clock

    async def load(self, task_id: str) -> TaskView | None:
        """The view of ``task_id``, or ``None`` if it does not exist."""
        async with self.sessions() as session:
            task = await session.get(Task, task_id)
            if task is None:
                return None
            run = (
                await session.execute(
                    select(Run).where(col(Run.task_id) == task_id).order_by(col(Run.attempt).desc()).limit(1)
                )
            ).scalar_one_or_none()
            query = select(RunEvent).where(col(RunEvent.task_id) == task_id, col(RunEvent.type).in_(_NOTABLE))
            events = list(
                (await session.execute(query.order_by(col(RunEvent.seq).desc()).limit(500))).scalars()
            )
        events.reverse()
        links = TaskLinks.of(task)
        view = TaskView(
            task_id=task.id,
            state=task.state,
            reason=task.state_reason,
            created_at=task.created_at,
            finished_at=task.finished_at,
            now=self.clock(),
            url=self.task_url(task.id),
            pr_url=task.pr_url,
            pr_number=links.pr_number,
            branch=task.branch,
            summary=task.summary,
            notes=list(links.github.config_notes) if links.github else [],
            secret_patterns=self.secret_patterns,
        )
        if run is not None:
            view.attempt = run.attempt
            view.tokens_in, view.tokens_out, view.cost_usd = run.tokens_in, run.tokens_out, run.cost_usd
            view.duration_s = run.duration_s
        for event in events:
            _apply(view, event, run.id if run is not None else None)
        if run is not None and run.error and run.error not in view.errors and task.state != "succeeded":
            view.errors.append(run.error)
        return view


def _apply(view: TaskView, event: RunEvent, run_id: str | None) -> None:
    data: dict[str, Any] = event.data or {}
    this_run = run_id is not None and event.run_id == run_id
    if event.type == EventType.status.value:
        if data.get("position") is not None:
            view.position = _int(data.get("position"))
        if this_run and data.get("files_changed"):
            view.files = [str(f) for f in data["files_changed"]]
        return
    if not this_run:
        return
    if event.type == EventType.progress.value and data.get("step"):
        view.steps.add(str(data["step"]))
        view.latest_step = str(data["step"])
    elif event.type == EventType.error.value:
        view.errors.append(str(data.get("message") or data))
    if isinstance(data.get("annotations"), list):
        view.annotations.extend(_annotation(a) for a in data["annotations"] if isinstance(a, dict))


def _annotation(raw: dict[str, Any]) -> dict[str, Any]:
    """A check-run annotation with the fields GitHub requires (bad values made safe)."""
    start = _int(raw.get("start_line")) or 1
    level = raw.get("annotation_level")
    return {
        "path": str(raw.get("path") or "."),
        "start_line": start,
        "end_line": max(_int(raw.get("end_line")) or start, start),
        "annotation_level": level if level in ("notice", "warning", "failure") else "notice",
        "message": str(raw.get("message") or "")[:64_000] or "(no message)",
    }


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
