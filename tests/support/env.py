"""Test helpers shared by every suite: git, Handoff's config and settings, live servers, a worker.

Fixtures live in ``tests/conftest.py``; what a test module imports lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from arq import Worker
from sqlalchemy.engine import make_url

from core.settings import Settings

SANDBOX_IMAGE = "handoff-sandbox:minimal"


def psql_admin(postgres_url: str, sql: str) -> None:
    """Run ``sql`` as the administrator of the PostgreSQL server at ``postgres_url``."""
    import psycopg

    url = make_url(postgres_url)
    with psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql)


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git and return stdout (tests only)."""
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def write_config(path: Path, limits: dict[str, Any] | None = None, **top: Any) -> Path:
    """A handoff.yml with fast shell profiles on the test image; ``top`` adds top-level sections."""
    limits = limits or {}
    config: dict[str, Any] = {
        "default_profile": "shell",
        "limits": {
            "max_running": 4,
            "per_repo": 4,
            "heartbeat_s": 1,
            "stale_after_s": 5,
            "shutdown_grace_s": 2,
            "retry_backoff_s": 0.2,
            "reaper_interval_s": 1,
            "lost_job_grace_s": 2,
            **limits,
        },
        "profiles": {
            "shell": {
                "image": SANDBOX_IMAGE,
                "limits": {"memory": "128m", "pids": 64, "cpus": 1.0, "timeout_s": 30, "tmpfs_size": "16m"},
            },
            "short": {
                "image": SANDBOX_IMAGE,
                "limits": {"memory": "32m", "pids": 32, "cpus": 0.5, "timeout_s": 3, "tmpfs_size": "8m"},
            },
        },
    }
    config.update(top)
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real uvicorn server on a loopback port, in the test's event loop."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, **overrides: Any) -> AsyncIterator[Worker]:
    """An arq worker in this event loop (no signal handlers)."""
    from jobs.worker import create_worker
    from web.integrations import worker_services

    if "ctx" not in overrides:
        overrides["ctx"] = {"handoff": worker_services(settings)}
    worker = create_worker(settings, overrides["ctx"]["handoff"], handle_signals=False, **overrides)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        await worker.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
