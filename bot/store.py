"""The bot's durable state: deliveries, references, outbox rows.

* ``Delivery`` — one row per Slack request (``ev:<event_id>``, ``cmd:<trigger_id>``,
  ``act:<trigger_id>``), written by :mod:`bot.ingress` and settled by :mod:`bot.job`.
* ``ExternalRef`` — ``slack:thread:<channel>:<ts>`` maps a thread to its task (a reply there is a
  follow-up); ``slack:binding:<channel>`` holds a channel bound with ``/handoff bind``.
* ``Outbox`` — replies to a person (refusals, follow-up receipts) go out through the same durable,
  rate-limited sender as task reports.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlmodel import col

from core.clock import utcnow
from core.db import Sessions
from core.links import TaskLinks
from core.models import ExternalRef, Task
from core.outbox import OutboxMessage, write_messages
from core.refs import RefStore
from core.states import TERMINAL

THREAD_KEY = "slack:thread:{channel}:{ts}"
BINDING_PREFIX = "slack:binding:"


class Store:
    """Reads and writes the bot's rows; every method is one short transaction."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.refs = RefStore(sessions)

    # -- external references ------------------------------------------------------------------

    async def index_thread(self, channel: str, ts: str, task_id: str) -> None:
        """Remember that the thread at ``channel``/``ts`` belongs to ``task_id``."""
        await self.refs.remember(THREAD_KEY.format(channel=channel, ts=ts), {"task_id": task_id})

    async def thread_task(self, channel: str, ts: str) -> str | None:
        """The task whose thread this is, if any: indexed (a status message heading it, a mention
        that started a task), or the newest task started from its first message."""
        async with self.sessions() as session:
            ref = await session.get(ExternalRef, THREAD_KEY.format(channel=channel, ts=ts))
            task_id = ref.ref.get("task_id") if ref is not None else None
            if task_id:
                return str(task_id)
            found = await session.execute(
                select(col(Task.id))
                .where(col(Task.target_key) == f"slack:{channel}:{ts}")
                .order_by(col(Task.created_at).desc())
                .limit(1)
            )
            newest = found.scalar_one_or_none()
            return str(newest) if newest else None

    async def set_thread_url(self, task_id: str, url: str) -> None:
        """Record the web address of the task's thread (a pull request links it), once it exists."""
        async with self.sessions.begin() as session:
            task = await session.get(Task, task_id, with_for_update=True)
            if task is None:
                return
            links = TaskLinks.of(task)
            if links.slack is None or links.slack.thread_url:
                return
            task.links = links.with_(slack=links.slack.model_copy(update={"thread_url": url})).dump()

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
