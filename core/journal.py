"""State changes and events, written in the caller's transaction.

Every task state change goes through :func:`transition`, which checks it against the state machine,
applies it as a compare-and-set on the current state (so two writers can never both win) and records
a ``status`` event. Event sequence numbers are handed out per task by an atomic counter on the task
row, which also orders events by commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from core.clock import utcnow
from core.errors import InvalidTransition
from core.events import ParsedEvent
from core.models import EventType, RunEvent, Task
from core.states import TaskState, check_transition


class StaleState(InvalidTransition):
    """Another writer changed the task's state first."""


async def allocate_seq(session: AsyncSession, task_id: str, count: int = 1) -> int:
    """Reserve ``count`` sequence numbers for ``task_id``; return the first."""
    result = await session.execute(
        update(Task)
        .where(Task.id == task_id)  # type: ignore[arg-type]
        .values(event_seq=Task.event_seq + count)
        .returning(Task.event_seq)  # type: ignore[arg-type]
    )
    last = result.scalar_one()
    return int(last) - count + 1


async def append_events(
    session: AsyncSession, task_id: str, run_id: str | None, events: Sequence[ParsedEvent]
) -> list[RunEvent]:
    """Store ``events`` for the task (and run), numbered in order."""
    if not events:
        return []
    first = await allocate_seq(session, task_id, len(events))
    rows = [
        RunEvent(task_id=task_id, run_id=run_id, seq=first + i, type=e.type, ts=e.ts, data=e.data)
        for i, e in enumerate(events)
    ]
    session.add_all(rows)
    return rows


async def append_event(
    session: AsyncSession, task_id: str, run_id: str | None, type_: str, data: dict[str, Any]
) -> RunEvent:
    """Store one event built here (not from an agent)."""
    rows = await append_events(session, task_id, run_id, [ParsedEvent(type_, utcnow(), data)])
    return rows[0]


async def transition(
    session: AsyncSession,
    task: Task,
    target: TaskState,
    *,
    reason: str | None = None,
    run_id: str | None = None,
    extra: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
) -> RunEvent:
    """Move ``task`` to ``target`` if allowed and nobody moved it first; record the change.

    ``values`` are further columns set in the same UPDATE (e.g. attempt counters).
    """
    current = TaskState(task.state)
    check_transition(current, target)
    now = utcnow()
    changes: dict[str, Any] = {"state": target.value, "state_reason": reason, "updated_at": now}
    if target.terminal:
        changes["finished_at"] = now
    elif current.terminal:
        changes["finished_at"] = None
    changes.update(values or {})
    result = await session.execute(
        update(Task)
        .where(Task.id == task.id, Task.state == current.value)  # type: ignore[arg-type]
        .values(**changes)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleState(current.value, target.value)
    for key, value in changes.items():
        # The row is already written: update the loaded object without making it dirty.
        set_committed_value(task, key, value)
    data: dict[str, Any] = {"state": target.value, "from": current.value}
    if reason:
        data["reason"] = reason
    data.update(extra or {})
    return await append_event(session, task.id, run_id, EventType.status.value, data)
