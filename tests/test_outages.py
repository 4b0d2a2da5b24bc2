"""Workers that outlive their dependencies: Redis, PostgreSQL and Docker going away under load.

Every server here is the test's own (``tests/support/services.py``) or reached through a proxy the
test controls: the shared Redis, PostgreSQL and dockerd that other test runs use are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from arq import Worker
from arq.connections import RedisSettings
from redis.exceptions import RedisError

from core.settings import Settings, load_settings
from jobs.dependencies import DependencyGate
from jobs.intake import HandoffWorker
from tests.support.env import LiveServer, write_config
from tests.support.services import PrivatePostgres, PrivateRedis
from tests.support.waiting import TERMINAL, wait_until

ROOT = Path(__file__).resolve().parent.parent
HOST = socket.gethostname()


def _settings(tmp_path: Path, database_url: str, redis_url: str, **env: Any) -> Settings:
    limits = {"max_running": 6, "per_repo": 6, "stale_after_s": 5, "lost_job_grace_s": 2}
    return load_settings(
        database_url=database_url,
        redis_url=redis_url,
        handoff_config=write_config(tmp_path / "outages.yml", limits=limits),
        handoff_workspace_dir=tmp_path / "workspaces",
        handoff_queue_name=f"handoff:outages:{uuid.uuid4().hex[:8]}",
        handoff_public_url="http://127.0.0.1:8000",
        **env,
    )


@contextlib.contextmanager
def worker_processes(settings: Settings, count: int, logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` ``handoff worker`` processes, their logs in ``logs/worker-<n>.log``."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "HANDOFF_CONFIG": str(settings.handoff_config),
        "HANDOFF_WORKSPACE_DIR": str(settings.handoff_workspace_dir),
        "HANDOFF_QUEUE_NAME": settings.handoff_queue_name,
        "HANDOFF_LOG_LEVEL": "WARNING",
    }
    if settings.docker_host:
        env["DOCKER_HOST"] = settings.docker_host
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for n in range(count):
        with (logs / f"worker-{n}.log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "web", "worker"],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def create(client: httpx.AsyncClient, instructions: str, repo: Path, timeout: float = 60) -> str:
    """POST a task, coming back while the API answers 503 (a dependency is away); return its id."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.post("/api/tasks", json={"repo": str(repo), "instructions": instructions})
        if response.status_code == 201:
            return str(response.json()["id"])
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "the API did not recover"
        await asyncio.sleep(0.2)


async def tasks(client: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    """Each task with its runs (``[]`` while the API answers 503)."""
    out = []
    for task_id in ids:
        response = await client.get(f"/api/tasks/{task_id}")
        if response.status_code == 503:
            return []
        out.append(response.json())
    return out


async def test_the_same_workers_finish_every_task_across_redis_and_postgres_restarts(
    tmp_path: Path,
    bare_repo: Path,
    sandbox_image: str,
    private_redis: PrivateRedis,
    private_postgres: PrivatePostgres,
) -> None:
    from web.app import create_app

    cfg = _settings(tmp_path, private_postgres.url, private_redis.url)
    job = "sleep 2; echo {n} > out-{n}.txt"
    async with LiveServer(create_app(cfg)) as api, httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        with worker_processes(cfg, 2, tmp_path / "logs") as workers:
            ids = [await create(client, job.format(n=n), bare_repo) for n in range(10)]

            async def running() -> int:
                return sum(t["state"] == "running" for t in await tasks(client, ids))

            await wait_until(lambda: running(), timeout=60)
            # Redis crashes and comes back empty: every queued job and in-progress mark is gone.
            await asyncio.to_thread(private_redis.restart, 2.0)
            ids += [await create(client, job.format(n=n), bare_repo) for n in range(10, 15)]
            await wait_until(lambda: running(), timeout=60)
            # PostgreSQL crashes under running agents, stays away for a few seconds, restarts.
            await asyncio.to_thread(private_postgres.stop)
            await asyncio.sleep(4)
            await asyncio.to_thread(private_postgres.start)
            ids += [await create(client, job.format(n=n), bare_repo) for n in range(15, 20)]

            async def all_ended() -> list[dict[str, Any]] | None:
                current = await tasks(client, ids)
                return current if current and all(t["state"] in TERMINAL for t in current) else None

            final: list[dict[str, Any]] = await wait_until(all_ended, timeout=240, interval=0.5)
            alive = [w.poll() is None for w in workers]
            pids = {f"{HOST}:{w.pid}" for w in workers}
        logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").iterdir()))
    assert alive == [True, True], logs[-4000:]
    assert [t["state"] for t in final] == ["succeeded"] * 20, [(t["id"], t["state_reason"]) for t in final]
    for task in final:
        # One run each, by one of the two original processes: nobody restarted a worker, and no
        # run was taken for lost because a heartbeat could not be written during the outage.
        assert [(r["worker_id"] in pids, r["outcome"]) for r in task["runs"]] == [(True, "succeeded")], task
    # Both outages were seen, logged, and ended by the workers themselves.
    for line in ("redis unavailable", "redis is back", "database unavailable", "database is back"):
        assert line in logs, (line, logs[-4000:])
    assert "Traceback" not in logs, logs[-4000:]


# ---------------------------------------------------------------- Docker through a proxy we control


class SocketProxy:
    """A Unix socket forwarding to the real Docker socket, which the test can take away."""

    def __init__(self, path: Path, target: str = "/var/run/docker.sock") -> None:
        self.path, self.target = path, target
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        """The engine goes away: no new connections, and the open ones drop."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for pipe in list(self._pipes):
            pipe.cancel()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        for pipe in (pump(reader, up_writer), pump(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)


@contextlib.asynccontextmanager
async def docker_proxy(tmp_path: Path) -> AsyncIterator[SocketProxy]:
    proxy = SocketProxy(tmp_path / "docker.sock")
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_docker_away_pauses_runs_and_they_start_when_it_returns(
    tmp_path: Path, bare_repo: Path, sandbox_image: str, redis_url: str, sqlite_url: str
) -> None:
    from web.app import create_app

    async with docker_proxy(tmp_path) as proxy:
        cfg = _settings(tmp_path, sqlite_url, redis_url, docker_host=proxy.url)
        async with (
            LiveServer(create_app(cfg)) as api,
            httpx.AsyncClient(base_url=api.url, timeout=30) as client,
        ):
            with worker_processes(cfg, 1, tmp_path / "logs") as (worker,):
                first = await create(client, "echo before", bare_repo)
                await wait_until(lambda: _state(client, first, "succeeded"), timeout=60)
                await proxy.stop()
                await asyncio.sleep(3)  # the worker's probe notices (every 2 s)
                during = await create(client, "echo during", bare_repo)
                await asyncio.sleep(5)
                held = (await client.get(f"/api/tasks/{during}")).json()
                await proxy.start()
                await wait_until(lambda: _state(client, during, "succeeded"), timeout=60)
                done = (await client.get(f"/api/tasks/{during}")).json()
                alive = worker.poll() is None
            logs = (tmp_path / "logs" / "worker-0.log").read_text()
    # Held in the queue while Docker was away (no run spent on "sandbox unavailable"), then run once.
    assert held["state"] == "queued" and held["runs"] == [], held
    assert [r["outcome"] for r in done["runs"]] == ["succeeded"], done["runs"]
    assert alive, logs
    assert "docker unavailable" in logs and "docker is back" in logs, logs


async def _state(client: httpx.AsyncClient, task_id: str, state: str) -> bool:
    task = (await client.get(f"/api/tasks/{task_id}")).json()
    assert task["state"] not in TERMINAL - {state}, task
    return bool(task["state"] == state)


# ---------------------------------------------------------------- the failure being fixed


async def noop(ctx: dict[str, Any], n: int) -> int:
    return n


async def test_plain_arq_worker_dies_with_redis_ours_picks_up_where_it_left(
    private_redis: PrivateRedis,
) -> None:
    from arq.connections import create_pool

    settings = RedisSettings.from_dsn(private_redis.url)
    settings.conn_retries = 0
    queue = f"outage:{uuid.uuid4().hex[:6]}"
    common: dict[str, Any] = {
        "functions": [noop],
        "redis_settings": settings,
        "queue_name": queue,
        "handle_signals": False,
        "poll_delay": 0.05,
    }
    plain = Worker(**common)

    async def ping() -> None:
        pool = await create_pool(settings)
        try:
            await pool.ping()
        finally:
            await pool.aclose()

    ours = HandoffWorker(gate=DependencyGate({"redis": ping}), **common)
    plain_task = asyncio.create_task(plain.async_run())
    ours_task = asyncio.create_task(ours.async_run())
    try:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(private_redis.restart)
        await asyncio.wait({plain_task}, timeout=10)
        assert plain_task.done(), "arq's worker kept running"  # the unguarded path fails...
        assert isinstance(plain_task.exception(), RedisError | OSError), plain_task.exception()
        assert not ours_task.done()  # ... ours waits for Redis and goes on
        pool = await create_pool(settings, default_queue_name=queue)
        job = await pool.enqueue_job("noop", 7)
        assert job is not None
        assert await job.result(timeout=10) == 7
        await pool.aclose()
    finally:
        await ours.close()
        ours_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await ours_task
        with contextlib.suppress(Exception):
            await plain.close()


async def test_a_worker_started_before_its_database_and_redis_waits_for_them(
    tmp_path: Path,
    bare_repo: Path,
    sandbox_image: str,
    private_redis: PrivateRedis,
    private_postgres: PrivatePostgres,
) -> None:
    from web.app import create_app

    cfg = _settings(tmp_path, private_postgres.url, private_redis.url)
    await asyncio.to_thread(private_postgres.stop)
    private_redis.stop()
    with worker_processes(cfg, 1, tmp_path / "logs") as (worker,):
        await asyncio.sleep(6)
        waited = worker.poll() is None
        await asyncio.to_thread(private_postgres.start)
        await asyncio.sleep(3)
        still = worker.poll() is None  # now past the migrations, waiting for Redis
        private_redis.start()
        async with (
            LiveServer(create_app(cfg)) as api,
            httpx.AsyncClient(base_url=api.url, timeout=30) as client,
        ):
            task_id = await create(client, "echo late", bare_repo)
            await wait_until(lambda: _state(client, task_id, "succeeded"), timeout=60)
    logs = (tmp_path / "logs" / "worker-0.log").read_text()
    assert waited and still, logs
    assert "waiting for it before starting" in logs and "redis is back" in logs, logs
