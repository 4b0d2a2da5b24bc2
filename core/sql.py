"""Idempotent writes on PostgreSQL and SQLite: ``INSERT ... ON CONFLICT DO NOTHING`` and upserts.

A repeated delivery or a replayed job must neither fail nor write twice; both dialects support
``ON CONFLICT`` with the same SQLAlchemy API, so this picks the dialect's ``insert``. Used for
deliveries, outbox rows and remote references (:mod:`core.refs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel


def dialect_insert(session: AsyncSession, model: type[SQLModel]) -> Any:
    """The dialect's ``insert`` (it has ``on_conflict_do_nothing`` / ``on_conflict_do_update``)."""
    return _dialect_insert(session.get_bind().dialect.name, model)


def _dialect_insert(dialect: str, model: type[SQLModel]) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def insert_ignore_statement(dialect: str, model: type[SQLModel], conflict: Sequence[str]) -> Any:
    """A cacheable ``INSERT ... ON CONFLICT DO NOTHING RETURNING <first conflict column>``.

    Execute it with one row of values as parameters: no row back means the row existed.
    """
    table = model.__table__  # type: ignore[attr-defined]
    return (
        _dialect_insert(dialect, model)
        .on_conflict_do_nothing(index_elements=list(conflict))
        .returning(table.c[conflict[0]])
    )


async def insert_ignore(
    session: AsyncSession, model: type[SQLModel], rows: Sequence[dict[str, Any]], conflict: Sequence[str]
) -> int:
    """Insert ``rows``, skipping those that clash on ``conflict``; return how many were inserted."""
    if not rows:
        return 0
    table = model.__table__  # type: ignore[attr-defined]
    stmt = (
        dialect_insert(session, model)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=list(conflict))
        # RETURNING, not rowcount: drivers disagree on rowcount for skipped conflicts.
        .returning(table.c[conflict[0]])
    )
    result = await session.execute(stmt)
    return len(result.all())
