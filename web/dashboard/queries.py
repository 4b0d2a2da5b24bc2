"""Read-only queries of the dashboard, each limited to the repositories the viewer may see.

``scope`` is the set of repositories a viewer may read, or ``None`` for all of them (the local
admin). Every query that returns tasks or runs applies it in SQL, so counts and pages agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from core.db import Sessions
from core.models import Run, RunEvent, Task
from core.tasks import TaskFilter, TaskService

Scope = frozenset[str] | None


def _in_scope(scope: Scope) -> list[Any]:
    return [] if scope is None else [col(Task.repo).in_(sorted(scope))]


async def known_repos(sessions: Sessions, limit: int = 300) -> list[str]:
    """Repositories that have tasks, most recently used first."""
    async with sessions() as session:
        rows = await session.execute(
            select(col(Task.repo))
            .group_by(col(Task.repo))
            .order_by(func.max(col(Task.created_at)).desc())
            .limit(limit)
        )
        return [str(repo) for repo in rows.scalars()]


async def list_tasks(
    tasks: TaskService, filters: TaskFilter, scope: Scope, *, offset: int = 0, limit: int = 50
) -> tuple[list[Task], int]:
    """A page of visible tasks matching ``filters`` (newest first) and how many match in all."""
    items, total = await tasks.list(replace(filters, repos=scope), offset=offset, limit=limit)
    return list(items), total


async def count_states(sessions: Sessions, scope: Scope, states: Sequence[str]) -> dict[str, int]:
    """How many visible tasks are in each of ``states`` now (0 for a state with none)."""
    async with sessions() as session:
        result = await session.execute(
            select(col(Task.state), func.count())
            .where(col(Task.state).in_(list(states)), *_in_scope(scope))
            .group_by(col(Task.state))
        )
        found = {str(state): int(n) for state, n in result.all()}
    return {state: found.get(state, 0) for state in states}


def _event_filter(task_id: str, run_id: str | None) -> list[Any]:
    # Events of a task that happened outside any run (queued, cancelled before a start) have no run.
    run = col(RunEvent.run_id) == run_id if run_id else col(RunEvent.run_id).is_(None)
    return [col(RunEvent.task_id) == task_id, run]


async def recent_events(
    sessions: Sessions, task_id: str, run_id: str | None, limit: int = 1000
) -> tuple[list[RunEvent], int]:
    """The last ``limit`` events of the run (oldest first) and how many earlier ones were left out."""
    where = _event_filter(task_id, run_id)
    async with sessions() as session:
        total = (await session.execute(select(func.count()).select_from(RunEvent).where(*where))).scalar_one()
        rows = await session.execute(
            select(RunEvent).where(*where).order_by(col(RunEvent.seq).desc()).limit(limit)
        )
        events = list(rows.scalars())
    events.reverse()
    return events, max(0, int(total) - len(events))


async def events_after(
    sessions: Sessions, task_id: str, run_id: str | None, after: int, limit: int = 200
) -> list[RunEvent]:
    """Events of the run with a sequence number above ``after``, in order."""
    async with sessions() as session:
        rows = await session.execute(
            select(RunEvent)
            .where(*_event_filter(task_id, run_id), col(RunEvent.seq) > after)
            .order_by(col(RunEvent.seq))
            .limit(limit)
        )
        return list(rows.scalars())


async def task_and_runs(sessions: Sessions, task_id: str) -> tuple[Task | None, list[Run]]:
    """A fresh read of the task and its runs (oldest first)."""
    async with sessions() as session:
        task = await session.get(Task, task_id, populate_existing=True)
        rows = await session.execute(
            select(Run).where(col(Run.task_id) == task_id).order_by(col(Run.attempt))
        )
        return task, list(rows.scalars())


@dataclass(frozen=True)
class RunRow:
    """What the overview needs of one run."""

    repo: str
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    cost_usd: float

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, ``None`` while running."""
        return None if self.finished_at is None else (self.finished_at - self.started_at).total_seconds()


async def runs_since(
    sessions: Sessions, since: datetime, scope: Scope, limit: int = 20_000
) -> Sequence[RunRow]:
    """Visible runs started since ``since`` (bounded: the overview is a picture, not an export)."""
    async with sessions() as session:
        rows = await session.execute(
            select(
                col(Task.repo), col(Run.outcome), col(Run.started_at), col(Run.finished_at), col(Run.cost_usd)
            )
            .join(Task, col(Task.id) == col(Run.task_id))
            .where(col(Run.started_at) >= since, *_in_scope(scope))
            .order_by(col(Run.started_at).desc())
            .limit(limit)
        )
        return [RunRow(str(r[0]), str(r[1]), r[2], r[3], float(r[4] or 0.0)) for r in rows.all()]
