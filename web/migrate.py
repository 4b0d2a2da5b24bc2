"""Apply the Alembic migrations (``handoff db upgrade``; ``serve`` and ``up`` run it at start)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config

from core.db import ensure_sqlite_dir, is_database_outage, sync_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at this project's migrations and ``database_url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` to ``revision``."""
    ensure_sqlite_dir(database_url)
    command.upgrade(alembic_config(database_url), revision)


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
