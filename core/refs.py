"""Remote references: what Handoff remembers about objects outside (``ExternalRef`` rows).

A key names an object (``github:comment:<task>``, ``slack:thread:<channel>:<ts>``, a channel
binding, a revoked installation) and its reference is a small JSON object (``{"id": 123}``).
:func:`put_ref` is an atomic upsert, so concurrent writers of one key never fail and the last
one wins; :class:`RefStore` does each read or write in its own short transaction (the outbox
sender's :class:`~core.outbox.DeliveryContext`, the Slack bot's bindings and threads).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import utcnow
from core.db import Sessions
from core.models import ExternalRef
from core.sql import dialect_insert


async def put_ref(session: AsyncSession, key: str, ref: dict[str, Any]) -> None:
    """Set the reference of ``key`` to ``ref`` (insert or replace) in ``session``'s transaction."""
    now = utcnow()
    stmt = dialect_insert(session, ExternalRef).values(key=key, ref=ref, updated_at=now)
    stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"ref": ref, "updated_at": now})
    await session.execute(stmt)


async def get_ref(session: AsyncSession, key: str) -> dict[str, Any] | None:
    """The reference stored under ``key``, if any."""
    row = await session.get(ExternalRef, key)
    return dict(row.ref) if row is not None else None


class RefStore:
    """Remote references, each read or write in its own transaction."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def recall(self, key: str) -> dict[str, Any] | None:
        """The reference remembered for ``key``, if any."""
        async with self.sessions() as session:
            return await get_ref(session, key)

    async def remember(self, key: str, ref: dict[str, Any]) -> None:
        """Durably remember ``ref`` for ``key`` now (e.g. right after creating the object)."""
        async with self.sessions.begin() as session:
            await put_ref(session, key, ref)
