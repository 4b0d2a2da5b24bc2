"""Apply the Alembic migrations (``handoff db upgrade``; ``serve``, ``worker`` and ``up`` run it at
start unless told not to).

Several processes may start at once against one PostgreSQL database (an API and a worker, several
replicas): they take turns under an advisory lock, so the first migrates and the others find the
database at head. Without the lock, two would race to create the same tables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from core.db import ensure_sqlite_dir, is_database_outage, sync_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# pg_advisory_lock key shared by every Handoff process migrating one database ("hndf").
MIGRATION_LOCK = 0x686E6466


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at this project's migrations and ``database_url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` to ``revision``."""
    ensure_sqlite_dir(database_url)
    if make_url(database_url).get_backend_name() not in {"postgresql", "postgres"}:
        command.upgrade(alembic_config(database_url), revision)
        return
    engine = create_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            try:
                command.upgrade(alembic_config(database_url), revision)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
    finally:
        engine.dispose()


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """:func:`upgrade` off the event loop."""
    await asyncio.to_thread(upgrade, database_url, revision)


def upgrade_when_reachable(database_url: str, *, log_every_s: float = 5.0) -> None:
    """:func:`upgrade`, waiting (with backoff, a log line every few seconds) while the database is away.

    ``serve``, ``worker`` and ``up`` start with this: a process started before its database (a
    restart of both, a compose start-up order) waits for it instead of exiting.
    """
    log = logging.getLogger(__name__)
    delay, started, logged = 0.2, time.monotonic(), float("-inf")
    while True:
        try:
            upgrade(database_url)
            return
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            if time.monotonic() - logged >= log_every_s:
                logged = time.monotonic()
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning(
                    "database unavailable for %.0f s (%s); waiting for it before starting",
                    time.monotonic() - started,
                    first,
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
