"""``GET /api/runs/{id}/events``: pages by sequence number, and a stream that outlives the database."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
from sqlalchemy import update
from sqlmodel import col

from core.clock import utcnow
from core.db import make_engine, make_sessions
from core.events import ParsedEvent
from core.journal import Journal
from core.models import Run, Task
from core.settings import Settings, load_settings
from core.states import RunOutcome
from tests.support.env import LiveServer, write_config
from tests.support.services import PrivatePostgres


async def _run_with_events(database_url: str, task_id: str, count: int) -> str:
    """Give the task a run holding ``count`` log events (as a worker's pump would write them)."""
    engine = make_engine(database_url)
    try:
        async with make_sessions(engine).begin() as session:
            task = await session.get(Task, task_id)
            assert task is not None
            run = Run(task_id=task_id, worker_id="test")
            session.add(run)
            await session.flush()
            lines = [ParsedEvent("log", utcnow(), {"text": f"line {n}"}) for n in range(count)]
            await Journal().append_events(session, task, run.id, lines)
            return run.id
    finally:
        await engine.dispose()


async def _more_events(database_url: str, task_id: str, run_id: str, texts: list[str], end: bool) -> None:
    engine = make_engine(database_url)
    try:
        async with make_sessions(engine).begin() as session:
            task = await session.get(Task, task_id)
            assert task is not None
            events = [ParsedEvent("log", utcnow(), {"text": t}) for t in texts]
            await Journal().append_events(session, task, run_id, events)
            if end:
                await session.execute(
                    update(Run)
                    .where(col(Run.id) == run_id)
                    .values(outcome=RunOutcome.succeeded.value, finished_at=utcnow())
                )
    finally:
        await engine.dispose()


async def test_events_come_in_pages_by_sequence_number(settings: Settings, api: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        task = (await client.post("/api/tasks", json={"repo": "o/r", "instructions": "x"})).json()
        run_id = await _run_with_events(settings.database_url, task["id"], 1234)
        texts: list[str] = []
        after, pages, more = 0, 0, True
        while more:
            page = (
                await client.get(f"/api/runs/{run_id}/events", params={"after": after, "limit": 500})
            ).json()
            texts += [e["data"]["text"] for e in page["items"]]
            assert len(page["items"]) <= 500
            after, more, pages = page["next_after"], page["more"], pages + 1
        default = (await client.get(f"/api/runs/{run_id}/events")).json()
        too_many = await client.get(f"/api/runs/{run_id}/events", params={"limit": 5000})
        past_the_end = (await client.get(f"/api/runs/{run_id}/events", params={"after": after})).json()
    assert texts == [f"line {n}" for n in range(1234)]  # all of them, in order, none twice
    assert pages == 3
    assert len(default["items"]) == 500 and default["more"] is True
    assert too_many.status_code == 422
    assert past_the_end == {**past_the_end, "items": [], "more": False, "next_after": after}


async def test_the_stream_sends_everything_and_ends(settings: Settings, api: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        task = (await client.post("/api/tasks", json={"repo": "o/r", "instructions": "x"})).json()
        run_id = await _run_with_events(settings.database_url, task["id"], 1500)
        await _more_events(settings.database_url, task["id"], run_id, [], end=True)
        seqs, ended = await _read_stream(client, run_id, headers={"Last-Event-ID": "100"})
    assert ended == {"outcome": "succeeded"}
    # The task's first event (queued, seq 1) has no run: the run holds 2..1501; resumed after 100.
    assert seqs == list(range(101, 1502))


async def _read_stream(
    client: httpx.AsyncClient, run_id: str, headers: dict[str, str] | None = None
) -> tuple[list[int], dict[str, str] | None]:
    seqs: list[int] = []
    ended = None
    async with client.stream(
        "GET", f"/api/runs/{run_id}/events", headers={"Accept": "text/event-stream", **(headers or {})}
    ) as response:
        assert response.status_code == 200
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "end":
                    ended = data
                    break
                seqs.append(int(data["seq"]))
    return seqs, ended


async def test_the_stream_waits_out_a_database_restart(
    tmp_path: Path, redis_url: str, private_postgres: PrivatePostgres
) -> None:
    from web.app import create_app

    settings = load_settings(
        database_url=private_postgres.url,
        redis_url=redis_url,
        handoff_config=write_config(tmp_path / "handoff.yml"),
        handoff_workspace_dir=tmp_path / "workspaces",
        handoff_queue_name=f"handoff:events:{uuid.uuid4().hex[:8]}",
    )
    async with (
        LiveServer(create_app(settings)) as api,
        httpx.AsyncClient(base_url=api.url, timeout=60) as client,
    ):
        task = (await client.post("/api/tasks", json={"repo": "o/r", "instructions": "x"})).json()
        run_id = await _run_with_events(settings.database_url, task["id"], 10)
        reader = asyncio.create_task(_read_stream(client, run_id))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(private_postgres.stop)
        await asyncio.sleep(3.0)
        assert not reader.done(), reader  # the stream is still open while the database is away
        await asyncio.to_thread(private_postgres.start)
        await _more_events(settings.database_url, task["id"], run_id, ["after the restart"], end=True)
        seqs, ended = await asyncio.wait_for(reader, 30)
    assert ended == {"outcome": "succeeded"}
    assert len(seqs) == 11 and seqs == sorted(set(seqs))


async def test_the_reaper_prunes_events_of_tasks_ended_before_the_horizon(sqlite_settings: Settings) -> None:
    from datetime import timedelta

    from sqlalchemy import func, select

    from core.models import RunEvent
    from jobs.reaper import Reaper
    from web.integrations import worker_services

    wc = worker_services(sqlite_settings)
    old = utcnow() - timedelta(days=30)
    async with wc.sessions.begin() as session:
        ended_long_ago = Task(repo="o/r", instructions="x", state="succeeded", finished_at=old)
        still_waiting = Task(repo="o/r", instructions="x", state="waiting")
        ended_lately = Task(repo="o/r", instructions="x", state="failed", finished_at=utcnow())
        session.add_all([ended_long_ago, still_waiting, ended_lately])
        await session.flush()
        for task in (ended_long_ago, still_waiting, ended_lately):
            session.add_all(
                RunEvent(task_id=task.id, seq=n, type="log", ts=old, data={"n": n}) for n in range(1, 8)
            )

    async def left() -> dict[str, int]:
        async with wc.sessions() as session:
            rows = await session.execute(
                select(col(RunEvent.task_id), func.count()).group_by(RunEvent.task_id)
            )
            return {str(t): int(n) for t, n in rows.all()}

    # Batches of 2, at most 2 per pass: the first pass leaves work, the next pass goes on at once.
    assert await Reaper(wc).prune(every_s=3600, batch=2, max_batches=2) == 4
    assert await Reaper(wc).prune(every_s=3600, batch=2, max_batches=2) == 3
    assert await Reaper(wc).prune(every_s=3600, batch=2, max_batches=2) == 0  # done: hourly again
    assert await left() == {still_waiting.id: 7, ended_lately.id: 7}
    await wc.close()
