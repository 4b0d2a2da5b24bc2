"""What a status message shows, read from the database when the message is sent.

Status upserts coalesce (only the latest pending one is sent), so the message is rendered from the
current rows at delivery time rather than from the event that queued it: nothing an intermediate,
dropped update would have shown is lost, and the elapsed time is as fresh as the send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from core.clock import utcnow
from core.db import Sessions
from core.models import EventType, Run, RunEvent, Task
from core.scheduling import queue_position
from core.states import TaskState

# Usage is reported on agent events; logs and heartbeats never carry it and may be many.
_USAGE_SCAN_LIMIT = 2000


@dataclass
class TaskView:
    """A task as a Slack message presents it."""

    task: Task
    run: Run | None = None
    step: str | None = None
    log_tail: list[str] = field(default_factory=list)
    position: int | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    now: datetime = field(default_factory=utcnow)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the current run started (or since the request, before any run)."""
        start = self.run.started_at if self.run is not None else self.task.created_at
        end = self.task.finished_at if TaskState(self.task.state).terminal and self.task.finished_at else None
        if self.run is not None and self.run.finished_at is not None:
            end = self.run.finished_at
        return max(((end or self.now) - start).total_seconds(), 0.0)


def _usage(data: dict[str, Any]) -> tuple[int, int, float]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0, 0, 0.0

    def number(*names: str) -> float:
        for name in names:
            value = usage.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return 0.0

    return (
        int(number("input_tokens", "tokens_in")),
        int(number("output_tokens", "tokens_out")),
        number("cost_usd"),
    )


async def load_view(sessions: Sessions, task_id: str, *, log_lines: int = 5) -> TaskView | None:
    """The current view of ``task_id`` (``None`` if the task is gone)."""
    async with sessions() as session:
        task = await session.get(Task, task_id)
        if task is None:
            return None
        view = TaskView(task=task)
        runs = await session.execute(
            select(Run).where(col(Run.task_id) == task_id).order_by(col(Run.attempt).desc()).limit(1)
        )
        view.run = runs.scalar_one_or_none()
        if task.state == TaskState.waiting.value and not task.needs_approval:
            view.position = await queue_position(session, task)
        # The current run's step; before any run, whatever progress the task reported.
        scope = col(RunEvent.run_id) == view.run.id if view.run else col(RunEvent.task_id) == task_id
        step = await session.execute(
            select(col(RunEvent.data))
            .where(scope, col(RunEvent.type) == EventType.progress.value)
            .order_by(col(RunEvent.seq).desc())
            .limit(1)
        )
        data = step.scalar_one_or_none()
        if isinstance(data, dict) and data.get("step") is not None:
            view.step = str(data["step"])
        if view.run is None:
            return view
        run = view.run
        if log_lines:
            logs = await session.execute(
                select(col(RunEvent.data))
                .where(col(RunEvent.run_id) == run.id, col(RunEvent.type) == EventType.log.value)
                .order_by(col(RunEvent.seq).desc())
                .limit(log_lines)
            )
            view.log_tail = [str(d.get("text", "")) for d in reversed(list(logs.scalars()))]
        if run.finished_at is not None and (run.tokens_in or run.tokens_out or run.cost_usd):
            view.tokens_in, view.tokens_out, view.cost_usd = run.tokens_in, run.tokens_out, run.cost_usd
        else:
            # While a run goes, its totals exist only as the usage its events reported.
            rows = await session.execute(
                select(col(RunEvent.data))
                .where(
                    col(RunEvent.run_id) == run.id,
                    col(RunEvent.type).not_in([EventType.log.value, EventType.heartbeat.value]),
                )
                .limit(_USAGE_SCAN_LIMIT)
            )
            for row in rows.scalars():
                tin, tout, cost = _usage(row)
                view.tokens_in += tin
                view.tokens_out += tout
                view.cost_usd += cost
        return view


async def log_tail(sessions: Sessions, task_id: str, lines: int) -> list[str]:
    """The last ``lines`` log lines of the task's latest run."""
    view = await load_view(sessions, task_id, log_lines=lines)
    return view.log_tail if view is not None else []
