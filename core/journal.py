"""State changes, events and their notifications, written in the caller's transaction.

Every task state change goes through :meth:`Journal.transition`, which checks it against the state
machine, applies it as a compare-and-set on the current state (so two writers can never both win)
and records a ``status`` event. Each stored event is shown to the reporters, whose outbox messages
are written in the same transaction — a notification exists exactly when its cause does. Event
sequence numbers come from an atomic counter on the task row, which also orders events by commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col

from core.clock import utcnow
from core.errors import InvalidTransition
from core.events import ParsedEvent
from core.models import EventType, RunEvent, Task
from core.outbox import OutboxMessage, Reporter, write_messages
from core.states import TaskState, check_transition

log = logging.getLogger(__name__)


# Events that change what people should know now; other events' notifications may wait for pacing.
URGENT_EVENTS = frozenset({EventType.status.value, EventType.question.value, EventType.result.value})


class StaleState(InvalidTransition):
    """Another writer changed the task's state first."""


async def allocate_seq(session: AsyncSession, task_id: str, count: int = 1) -> int:
    """Reserve ``count`` sequence numbers for ``task_id``; return the first."""
    result = await session.execute(
        update(Task)
        .where(col(Task.id) == task_id)
        .values(event_seq=col(Task.event_seq) + count)
        .returning(col(Task.event_seq))
    )
    last = result.scalar_one()
    return int(last) - count + 1


class Journal:
    """Writes events and transitions, and the outbox rows their reporters ask for."""

    def __init__(self, reporters: Sequence[Reporter] = ()) -> None:
        self.reporters = list(reporters)

    async def append_events(
        self, session: AsyncSession, task: Task, run_id: str | None, events: Sequence[ParsedEvent]
    ) -> list[RunEvent]:
        """Store ``events`` for the task (and run), numbered in order, with their notifications."""
        if not events:
            return []
        first = await allocate_seq(session, task.id, len(events))
        rows = [
            RunEvent(task_id=task.id, run_id=run_id, seq=first + i, type=e.type, ts=e.ts, data=e.data)
            for i, e in enumerate(events)
        ]
        session.add_all(rows)
        await self.notify(session, task, rows)
        return rows

    async def append_event(
        self, session: AsyncSession, task: Task, run_id: str | None, type_: str, data: dict[str, Any]
    ) -> RunEvent:
        """Store one event built here (not by an agent)."""
        rows = await self.append_events(session, task, run_id, [ParsedEvent(type_, utcnow(), data)])
        return rows[0]

    async def notify(self, session: AsyncSession, task: Task, events: Sequence[RunEvent]) -> None:
        """Write the outbox rows the reporters derive from ``events``."""
        messages: list[tuple[OutboxMessage, bool]] = []
        for event in events:
            # A state change must reach people promptly; progress and logs may wait for pacing.
            urgent = event.type in URGENT_EVENTS
            for reporter in self.reporters:
                messages.extend((m, urgent) for m in reporter.messages(task, event))
        if not messages:
            return
        # Upserts of one key within this batch coalesce right here: only the last one matters
        # (and it is urgent when any of the ones it replaces was).
        last_upsert: dict[tuple[str, str], int] = {}
        urgent_keys: set[tuple[str, str]] = set()
        for i, (m, urgent) in enumerate(messages):
            if m.kind == "upsert":
                last_upsert[(m.channel, m.key)] = i
                if urgent:
                    urgent_keys.add((m.channel, m.key))
        keep = [
            replace(m, urgent=urgent or (m.channel, m.key) in urgent_keys)
            for i, (m, urgent) in enumerate(messages)
            if m.kind != "upsert" or last_upsert[(m.channel, m.key)] == i
        ]
        await write_messages(session, keep, task.id)

    async def transition(
        self,
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
            .where(col(Task.id) == task.id, col(Task.state) == current.value)
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
        return await self.append_event(session, task, run_id, EventType.status.value, data)
