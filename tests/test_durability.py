"""Fault injection: killed and stopped workers, restarted Redis and PostgreSQL, caps and locks.

Real processes, real Docker, real Redis and PostgreSQL; the status webhook target records what
the outside world was told, so "reported exactly once" is checked where it matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from core.db import make_engine, make_sessions
from core.models import Run, RunEvent, Task
from core.settings import Settings
from tests.fakes.webhook_target import WebhookTarget
from tests.support.env import LiveServer, running_worker, write_config
from tests.support.services import PrivatePostgres, PrivateRedis
from tests.support.waiting import wait_for, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _containers(task_id: str) -> list[Any]:
    return docker.DockerClient(version="1.41").containers.list(
        all=True, filters={"label": f"handoff.task={task_id}"}
    )


@contextlib.contextmanager
def worker_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """``handoff worker`` in its own process group, configured through the environment."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "HANDOFF_CONFIG": str(settings.handoff_config),
        "HANDOFF_WORKSPACE_DIR": str(settings.handoff_workspace_dir),
        "HANDOFF_MIRROR_DIR": str(settings.handoff_mirror_dir),
        "HANDOFF_QUEUE_NAME": settings.handoff_queue_name,
        "HANDOFF_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "web", "worker"], cwd=ROOT, env=env, start_new_session=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[WebhookTarget, str]]:
    fake = WebhookTarget()
    async with LiveServer(fake.app) as server:
        yield fake, f"{server.url}/status"


def _with_webhook(settings: Settings, tmp_path: Path, url: str, **limits: Any) -> Settings:
    config = write_config(
        tmp_path / "handoff-chaos.yml",
        limits=limits,
        webhooks=[{"url": url, "min_interval_s": 0.2, "timeout_s": 2.0}],
        outbox={"poll_s": 0.05, "max_backoff_s": 1.0},
    )
    return settings.model_copy(update={"handoff_config": config})


def _final_reports(fake: WebhookTarget, task_id: str, state: str) -> int:
    return sum(
        1
        for w in fake.writes()
        if w.body
        and w.body.get("task_id") == task_id
        and w.body.get("state") == state
        and 200 <= w.status < 300
    )


async def test_sigkill_mid_run_recovers_and_reports_once(
    settings: Settings, tmp_path: Path, bare_repo: Path, webhook: tuple[WebhookTarget, str]
) -> None:
    fake, url = webhook
    cfg = _with_webhook(settings, tmp_path, url)
    from web.app import create_app

    async with LiveServer(create_app(cfg)) as api, httpx.AsyncClient(base_url=api.url) as client:
        with worker_process(cfg) as first:
            body = {"repo": str(bare_repo), "instructions": "sleep 3; echo done > out.txt"}
            task = (await client.post("/api/tasks", json=body)).json()
            await wait_for(client, task["id"], {"running"}, timeout=30)
            await wait_until(lambda: _containers(task["id"]), timeout=10)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        assert _containers(task["id"]), "the container outlives its worker"
        with worker_process(cfg):
            done = await wait_for(client, task["id"], timeout=60)
            await wait_until(lambda: _final_reports(fake, task["id"], done["state"]) >= 1, timeout=15)
            await asyncio.sleep(1.0)  # give a duplicate the chance to show up
    assert done["state"] == "succeeded", done
    assert [r["outcome"] for r in done["runs"]] == ["requeued", "succeeded"]
    assert "worker lost" in (done["runs"][0]["error"] or "")
    assert _containers(task["id"]) == []
    assert _final_reports(fake, task["id"], "succeeded") == 1
    assert (
        len([w for w in fake.writes() if w.method == "POST" and w.body and w.body["task_id"] == task["id"]])
        == 1
    )


async def test_sigterm_honours_grace_then_requeues(
    sqlite_settings: Settings, tmp_path: Path, bare_repo: Path
) -> None:
    from web.app import create_app

    cfg = sqlite_settings.model_copy(
        update={"handoff_config": write_config(tmp_path / "grace.yml", limits={"shutdown_grace_s": 2})}
    )
    async with LiveServer(create_app(cfg)) as api, httpx.AsyncClient(base_url=api.url) as client:
        with worker_process(cfg) as proc:
            quick = (
                await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "sleep 1"})
            ).json()
            slow = (
                await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "sleep 60"})
            ).json()
            await wait_for(client, quick["id"], {"running"}, timeout=30)
            await wait_for(client, slow["id"], {"running"}, timeout=30)
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
            stopped_after = time.monotonic() - start
        quick_done = (await client.get(f"/api/tasks/{quick['id']}")).json()
        slow_now = (await client.get(f"/api/tasks/{slow['id']}")).json()
    assert quick_done["state"] == "succeeded"  # finished inside the grace period
    assert 1.5 <= stopped_after < 15
    assert slow_now["state"] == "queued", slow_now  # handed back, not lost
    assert slow_now["runs"][-1]["outcome"] == "requeued"
    assert _containers(slow["id"]) == []


async def test_redis_restart_loses_no_task(
    sqlite_settings: Settings, tmp_path: Path, bare_repo: Path, private_redis: PrivateRedis
) -> None:
    from web.app import create_app

    cfg = sqlite_settings.model_copy(update={"redis_url": private_redis.url})
    async with LiveServer(create_app(cfg)) as api, httpx.AsyncClient(base_url=api.url) as client:
        running = (
            await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "sleep 2; touch a"})
        ).json()
        async with running_worker(cfg):
            await wait_for(client, running["id"], {"running"}, timeout=30)
            # Redis dies mid-run (no persistence: every queued job and arq key is gone).
            private_redis.stop()
            down = await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "touch b"})
            assert down.status_code == 503
            health = await client.get("/healthz")
            assert health.status_code == 503 and health.json()["checks"]["redis"]["ok"] is False
            private_redis.start()
            # The API recovers by itself; new work queues again.
            await wait_until(
                lambda: client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "touch c"}),
                timeout=10,
            )
            assert (await wait_for(client, running["id"], timeout=60))["state"] == "succeeded"
        # Tasks queued while no worker runs, then Redis restarts and loses their jobs.
        queued = [
            (
                await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": f"touch q{i}"})
            ).json()
            for i in range(3)
        ]
        private_redis.stop()
        private_redis.start()
        async with running_worker(cfg):
            for t in queued:
                done = await wait_for(client, t["id"], timeout=60)
                assert done["state"] == "succeeded"
                assert len(done["runs"]) == 1  # re-enqueued once, run once
        everything = (await client.get("/api/tasks")).json()["items"]
    assert all(t["state"] == "succeeded" for t in everything), [(t["id"], t["state"]) for t in everything]
    assert len(everything) == 5  # the 503 created nothing


async def test_postgres_restart_api_answers_503_and_recovers(
    sqlite_settings: Settings, bare_repo: Path, private_postgres: PrivatePostgres
) -> None:
    from web.app import create_app

    cfg = sqlite_settings.model_copy(update={"database_url": private_postgres.url})
    statuses: list[tuple[int, str | None]] = []
    async with LiveServer(create_app(cfg)) as api, httpx.AsyncClient(base_url=api.url) as client:

        async def post(i: int) -> None:
            r = await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": f"touch f{i}"})
            statuses.append((r.status_code, r.json().get("id") if r.status_code == 201 else None))

        for i in range(5):
            await post(i)
        await asyncio.to_thread(private_postgres.stop)
        for i in range(5, 10):
            await post(i)
        await asyncio.to_thread(private_postgres.start)
        for i in range(10, 15):
            await post(i)
        listed = (await client.get("/api/tasks", params={"limit": 200})).json()
    codes = [c for c, _ in statuses]
    assert codes[:5] == [201] * 5 and codes[10:] == [201] * 5
    assert set(codes[5:10]) == {503}
    created = {i for c, i in statuses if c == 201}
    assert {t["id"] for t in listed["items"]} == created  # nothing lost, nothing extra
    assert listed["total"] == 10


async def test_fifty_tasks_never_exceed_the_repo_cap(
    settings: Settings, tmp_path: Path, bare_repo: Path
) -> None:
    from web.app import create_app

    cfg = settings.model_copy(
        update={
            "handoff_config": write_config(tmp_path / "cap.yml", limits={"max_running": 6, "per_repo": 2})
        }
    )
    async with LiveServer(create_app(cfg)) as api, httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        created = await asyncio.gather(
            *(
                client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "true"})
                for _ in range(50)
            )
        )
        ids = [r.json()["id"] for r in created]
        async with running_worker(cfg):
            for task_id in ids:
                done = await wait_for(client, task_id, timeout=180)
                assert done["state"] == "succeeded", done
    engine = make_engine(cfg.database_url)
    sessions = make_sessions(engine)
    async with sessions() as session:
        runs = list((await session.execute(select(Run))).scalars())
        tasks = {t.id: t for t in (await session.execute(select(Task))).scalars()}
        waits = [
            e
            for e in (await session.execute(select(RunEvent).where(col(RunEvent.type) == "status"))).scalars()
            if e.data.get("state") == "waiting"
        ]
    await engine.dispose()
    assert len(runs) == 50
    edges = sorted([(r.started_at, 1) for r in runs] + [(r.finished_at, -1) for r in runs if r.finished_at])
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    assert peak <= 2, f"{peak} tasks ran at once on one repository"
    assert waits, "tasks beyond the cap wait"
    assert all(isinstance(e.data.get("position"), int) and e.data["position"] >= 1 for e in waits)
    # First come, first served: tasks start in the order they were created (within the 2 slots).
    started = [r.task_id for r in sorted(runs, key=lambda r: r.started_at)]
    order = sorted(tasks.values(), key=lambda t: (t.created_at, t.id))
    rank = {t.id: i for i, t in enumerate(order)}
    assert all(abs(rank[task_id] - i) <= 2 for i, task_id in enumerate(started)), [rank[t] for t in started]


async def test_two_requests_on_one_issue_run_one_after_the_other(
    sqlite_settings: Settings, bare_repo: Path
) -> None:
    from core.tasks import NewTask

    async with running_worker(sqlite_settings) as worker:
        wc = worker.ctx["handoff"]
        first, second = await asyncio.gather(
            wc.tasks.create(
                NewTask(repo=str(bare_repo), instructions="sleep 1; touch one", target_key="github:o/r#7")
            ),
            wc.tasks.create(
                NewTask(repo=str(bare_repo), instructions="touch two", target_key="github:o/r#7")
            ),
        )

        async def states() -> tuple[str, str]:
            a, b = await wc.tasks.get(first[0].id), await wc.tasks.get(second[0].id)
            return a.state, b.state

        seen: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen.add(await states())
            if await states() == ("succeeded", "succeeded"):
                break
            await asyncio.sleep(0.05)
        runs = [r for t in (first[0], second[0]) for r in await wc.tasks.runs(t.id)]
    assert await states() == ("succeeded", "succeeded")
    assert ("running", "waiting") in seen or ("waiting", "running") in seen, seen
    a, b = sorted(runs, key=lambda r: r.started_at)
    assert a.finished_at is not None and a.finished_at <= b.started_at
