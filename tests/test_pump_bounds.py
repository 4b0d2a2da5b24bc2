"""The event pump's memory stays bounded while PostgreSQL refuses connections, and it resumes."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlmodel import col

from core.config import OutputLimits
from core.db import make_engine, make_sessions
from core.journal import Journal
from core.models import Run, RunEvent, Task
from jobs.pump import EventPump
from tests.support.env import psql_admin
from tests.support.waiting import wait_until


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_events_wait_bounded_while_the_database_is_away(database_url: str, postgres_url: str) -> None:
    name = make_url(database_url).database
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    async with sessions.begin() as session:
        task = Task(repo="acme/demo", instructions="x")
        session.add(task)
        await session.flush()
        run = Run(task_id=task.id, attempt=1)
        session.add(run)
    pump = EventPump(
        sessions, Journal(), task, run.id, limits=OutputLimits(max_pending=500, max_events=100_000)
    )
    pump.start()
    try:
        for i in range(100):
            pump.push(f"before {i}")
        await wait_until(lambda: not pump._pending, timeout=20)
        # The database goes away: no new connections, the pool's connections cut.
        psql_admin(postgres_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        psql_admin(
            postgres_url, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        for i in range(20_000):
            pump.push(f"during {i}")
            if i % 1000 == 0:
                await asyncio.sleep(0.05)
        assert len(pump._pending) <= 500 and pump.lost_total >= 19_500
        psql_admin(postgres_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await wait_until(lambda: not pump._pending and not pump.lost, timeout=30)
        await pump.close()
    finally:
        psql_admin(postgres_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    async with sessions() as session:
        stored = (
            await session.execute(select(func.count()).where(col(RunEvent.task_id) == task.id))
        ).scalar_one()
        notes = [
            e.data
            for e in (
                await session.execute(select(RunEvent).where(col(RunEvent.task_id) == task.id))
            ).scalars()
            if "lost" in e.data
        ]
    await engine.dispose()
    assert stored <= 100 + 500 + 1 and len(notes) == 1 and notes[0]["lost"] == pump.lost_total
