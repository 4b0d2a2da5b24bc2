"""The bot's durable state, all in existing tables (no migration needed).

* ``Delivery`` — one row per Slack request (``ev:<event_id>``, ``cmd:<trigger_id>``,
  ``act:<trigger_id>``), claimed before any work, so a retried event is processed once.
* ``ExternalRef`` — ``slack:thread:<channel>:<ts>`` maps a thread to its task (a reply there is a
  follow-up); ``slack:binding:<channel>`` holds a channel bound with ``/handoff bind``.
* ``Outbox`` — replies to a person (refusals, follow-up receipts) go out through the same durable,
  rate-limited sender as task reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from core.clock import utcnow
from core.db import Sessions
from core.models import Delivery, ExternalRef, Task
from core.outbox import OutboxMessage, write_messages
from core.refs import RefStore
from core.states import TERMINAL

# A claim whose work never finished (the process died) may be taken over by Slack's next retry
# (Slack retries after about 1 and 5 minutes); a claim younger than this is in progress elsewhere.
STALE_CLAIM = timedelta(seconds=45)
THREAD_KEY = "slack:thread:{channel}:{ts}"
BINDING_PREFIX = "slack:binding:"


class Store:
    """Reads and writes the bot's rows; every method is one short transaction."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.refs = RefStore(sessions)

    # -- deliveries ---------------------------------------------------------------------------

    async def claim(self, delivery_id: str, event: str) -> bool:
        """Take the delivery for this process; ``False`` when it was (or is being) handled already."""
        try:
            async with self.sessions.begin() as session:
                session.add(Delivery(id=delivery_id[:255], source="slack", event=event[:100]))
            return True
        except IntegrityError:
            pass
        # Seen before: only a claim abandoned mid-work (outcome never written) may be taken over.
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Delivery)
                .where(
                    col(Delivery.id) == delivery_id[:255],
                    col(Delivery.outcome).is_(None),
                    col(Delivery.received_at) < utcnow() - STALE_CLAIM,
                )
                .values(received_at=utcnow())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def settle(self, delivery_id: str, outcome: str, task_id: str | None = None) -> None:
        """Record what the delivery led to; from now on a retry of it is a no-op."""
        async with self.sessions.begin() as session:
            await session.execute(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id[:255])
                .values(outcome=outcome[:255], task_id=task_id)
            )

    async def release(self, delivery_id: str) -> None:
        """Forget a claim whose work failed, so Slack's retry can do it."""
        async with self.sessions.begin() as session:
            await session.execute(delete(Delivery).where(col(Delivery.id) == delivery_id[:255]))

    # -- external references ------------------------------------------------------------------

    async def index_thread(self, channel: str, ts: str, task_id: str) -> None:
        """Remember that the thread at ``channel``/``ts`` belongs to ``task_id``."""
        await self.refs.remember(THREAD_KEY.format(channel=channel, ts=ts), {"task_id": task_id})

    async def thread_task(self, channel: str, ts: str) -> str | None:
        """The task whose thread this is, if any."""
        ref = await self.refs.recall(THREAD_KEY.format(channel=channel, ts=ts))
        task_id = ref.get("task_id") if ref else None
        return str(task_id) if task_id else None

    async def bind(self, channel: str, repo: str | None, by: str) -> None:
        """Bind ``channel`` to ``repo`` (``None`` unbinds; an explicit unbind overrides config)."""
        await self.refs.remember(
            BINDING_PREFIX + channel, {"repo": repo, "by": by, "at": utcnow().isoformat()}
        )

    async def bindings(self) -> dict[str, str | None]:
        """Every channel bound or unbound in the database: channel -> repository (or ``None``)."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(ExternalRef).where(col(ExternalRef.key).startswith(BINDING_PREFIX))
            )
            return {ref.key[len(BINDING_PREFIX) :]: ref.ref.get("repo") for ref in rows.scalars()}

    # -- outbox and tasks ---------------------------------------------------------------------

    async def send(self, messages: Sequence[OutboxMessage], task_id: str | None = None) -> None:
        """Queue notifications that are not caused by a task event (replies to a person)."""
        # A repeated idempotency key: this reply was queued by an earlier attempt of the delivery.
        async with self.sessions.begin() as session:
            await write_messages(session, messages, task_id, skip_duplicates=True)

    async def running_tasks(self, requester: str, limit: int = 20) -> list[Task]:
        """The requester's tasks that have not ended, newest first."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(Task)
                .where(
                    col(Task.requester) == requester,
                    col(Task.state).not_in([s.value for s in TERMINAL]),
                )
                .order_by(col(Task.created_at).desc())
                .limit(limit)
            )
            return list(rows.scalars())

    async def task(self, task_id: str) -> Task | None:
        """One task by id."""
        async with self.sessions() as session:
            return await session.get(Task, task_id)
