"""Database engine and sessions (async SQLAlchemy over SQLite or PostgreSQL with psycopg 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# Execution option marking a connection whose transaction will write (see Sessions.begin).
_WRITES = "handoff_writes"


class Sessions(async_sessionmaker[AsyncSession]):
    """The session factory: ``sessions()`` for reading, ``sessions.begin()`` for a transaction.

    On SQLite a transaction that reads and then writes must take the write lock when it begins
    (``BEGIN IMMEDIATE``, waiting out ``busy_timeout``): a deferred one that read first cannot
    upgrade once another connection has written meanwhile, and fails at once with "database is
    locked" — busy waiting does not apply. Readers stay deferred, so they never wait for writers.
    """

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:  # type: ignore[override]
        """A session in a transaction, committed on success and rolled back on error."""
        async with self() as session, session.begin():
            await session.connection(execution_options={_WRITES: True})
            yield session


def async_url(url: str) -> str:
    """Map a plain ``sqlite://`` / ``postgresql://`` URL to its async driver form."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The synchronous driver form of ``url`` (used by Alembic)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite")
    elif backend in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine; SQLite gets WAL and a busy timeout so API and worker can share it."""
    ensure_sqlite_dir(url)
    aurl = async_url(url)
    if aurl.startswith("sqlite"):
        engine = create_async_engine(aurl, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            # SQLAlchemy emits BEGIN itself (below) instead of the driver's implicit one, which
            # only begins at the first write and so lets a transaction's reads go unprotected.
            dbapi_conn.isolation_level = None

        if kwargs.get("isolation_level") != "AUTOCOMMIT":

            @event.listens_for(engine.sync_engine, "begin")
            def _begin(conn: Any) -> None:
                immediate = conn.get_execution_options().get(_WRITES)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    # pool_pre_ping lets the API recover by itself after PostgreSQL restarts.
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_async_engine(aurl, **kwargs)


def make_sessions(engine: AsyncEngine) -> Sessions:
    """A session factory whose objects stay usable after commit."""
    return Sessions(engine, expire_on_commit=False)


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database did not answer (down, restarting, connection lost).

    Such failures say nothing about the request: the same statement succeeds once the database is
    back. Errors of the statement itself (a constraint, bad data) are not outages.
    """
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout | ConnectionError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError)
