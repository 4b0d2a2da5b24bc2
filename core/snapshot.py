"""One snapshot of a task: what GitHub, Slack and the dashboard show, read in one place, one way.

Notifiers render from the database when they send (outbox upserts coalesce, so the newest state
must win whatever the row said), and the dashboard shows the same facts. :func:`load_snapshot` is
the one loader, so the surfaces never disagree: the queue position is computed live, the step is
the run's latest ``progress``, and tokens and cost are the run's totals once it has ended and,
while it goes, the usage its events reported so far (:func:`run_usage`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from core.clock import utcnow
from core.db import Sessions
from core.links import TaskLinks
from core.models import EventType, Run, RunEvent, Task
from core.scheduling import queue_position
from core.states import TaskState
from core.usage import TokenUsage

# Usage is reported on agent events; logs and heartbeats never carry it and may be many.
USAGE_SCAN_LIMIT = 2000
# Events that say what a run did (status, progress, errors, results), newest first, at most this many.
_NOTABLE = [EventType.status.value, EventType.progress.value, EventType.error.value, EventType.result.value]
NOTABLE_LIMIT = 500


@dataclass
class TaskSnapshot:
    """A task and its current (or chosen) run, as every surface presents them."""

    task: Task
    run: Run | None = None
    now: datetime = field(default_factory=utcnow)
    # The run's latest progress step (before any run: the task's).
    step: str | None = None
    # Every step the run reported (``details``).
    steps: set[str] = field(default_factory=set)
    # Where the task stands in the queue while it waits for a slot.
    position: int | None = None
    # What the run changed, its errors and its check-run annotations (``details``).
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    # The run's last log lines (``log_lines``).
    log_tail: list[str] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)

    @property
    def links(self) -> TaskLinks:
        """The task's links."""
        return TaskLinks.of(self.task)

    @property
    def terminal(self) -> bool:
        """True once the task has ended."""
        return TaskState(self.task.state).terminal

    @property
    def attempt(self) -> int:
        """The run's attempt number (0 before any run)."""
        return self.run.attempt if self.run is not None else 0

    @property
    def task_elapsed_s(self) -> float:
        """Seconds from the request to its end (or to now)."""
        end = self.task.finished_at or self.now
        return max((end - self.task.created_at).total_seconds(), 0.0)

    @property
    def run_elapsed_s(self) -> float:
        """Seconds since the run started (or since the request, before any run), to its end."""
        start = self.run.started_at if self.run is not None else self.task.created_at
        end = self.task.finished_at if self.terminal and self.task.finished_at else None
        if self.run is not None and self.run.finished_at is not None:
            end = self.run.finished_at
        return max(((end or self.now) - start).total_seconds(), 0.0)

    @property
    def notes(self) -> list[str]:
        """What the repository's ``.handoff.yml`` had refused, for its owners (GitHub tasks)."""
        github = self.links.github
        return list(github.config_notes) if github is not None else []


async def run_usage(session: AsyncSession, run: Run) -> TokenUsage:
    """The run's tokens and cost: its totals once it ended, else what its events reported so far."""
    if run.finished_at is not None and (run.tokens_in or run.tokens_out or run.cost_usd):
        return TokenUsage(run.tokens_in, run.tokens_out, run.cost_usd)
    rows = await session.execute(
        select(col(RunEvent.data))
        .where(
            col(RunEvent.run_id) == run.id,
            col(RunEvent.type).not_in([EventType.log.value, EventType.heartbeat.value]),
        )
        .limit(USAGE_SCAN_LIMIT)
    )
    total = TokenUsage()
    for data in rows.scalars():
        usage = TokenUsage.of_event(data) if isinstance(data, dict) else None
        if usage is not None:
            total += usage
    return total


async def load_snapshot(
    sessions: Sessions,
    task_id: str,
    *,
    run_id: str | None = None,
    log_lines: int = 0,
    details: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> TaskSnapshot | None:
    """The snapshot of ``task_id`` (``None`` if the task is gone).

    ``run_id`` picks a run (default: the latest); ``log_lines`` reads that many last log lines;
    ``details`` reads the run's steps, changed files, errors and annotations.
    """
    async with sessions() as session:
        task = await session.get(Task, task_id)
        if task is None:
            return None
        snap = TaskSnapshot(task=task, now=clock())
        query = select(Run).where(col(Run.task_id) == task_id)
        query = query.where(col(Run.id) == run_id) if run_id else query.order_by(col(Run.attempt).desc())
        snap.run = (await session.execute(query.limit(1))).scalar_one_or_none()
        if task.state == TaskState.waiting.value and not task.needs_approval:
            snap.position = await queue_position(session, task)
        run = snap.run
        # The run's step; before any run, whatever progress the task reported.
        scope = col(RunEvent.run_id) == run.id if run else col(RunEvent.task_id) == task_id
        step = await session.execute(
            select(col(RunEvent.data))
            .where(scope, col(RunEvent.type) == EventType.progress.value)
            .order_by(col(RunEvent.seq).desc())
            .limit(1)
        )
        data = step.scalar_one_or_none()
        if isinstance(data, dict) and data.get("step") is not None:
            snap.step = str(data["step"])
        if run is None:
            return snap
        if details:
            await _details(session, snap, run)
        if log_lines:
            logs = await session.execute(
                select(col(RunEvent.data))
                .where(col(RunEvent.run_id) == run.id, col(RunEvent.type) == EventType.log.value)
                .order_by(col(RunEvent.seq).desc())
                .limit(log_lines)
            )
            snap.log_tail = [str(d.get("text", "")) for d in reversed(list(logs.scalars()))]
        snap.usage = await run_usage(session, run)
        return snap


async def _details(session: AsyncSession, snap: TaskSnapshot, run: Run) -> None:
    query = select(RunEvent).where(col(RunEvent.run_id) == run.id, col(RunEvent.type).in_(_NOTABLE))
    events = list(
        (await session.execute(query.order_by(col(RunEvent.seq).desc()).limit(NOTABLE_LIMIT))).scalars()
    )
    for event in reversed(events):
        data: dict[str, Any] = event.data or {}
        if event.type == EventType.status.value:
            if data.get("files_changed"):
                snap.files = [str(f) for f in data["files_changed"]]
            continue
        if event.type == EventType.progress.value and data.get("step"):
            snap.steps.add(str(data["step"]))
        elif event.type == EventType.error.value:
            snap.errors.append(str(data.get("message") or data))
        if isinstance(data.get("annotations"), list):
            snap.annotations.extend(_annotation(a) for a in data["annotations"] if isinstance(a, dict))
    if run.error and run.error not in snap.errors and snap.task.state != TaskState.succeeded.value:
        snap.errors.append(run.error)


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
