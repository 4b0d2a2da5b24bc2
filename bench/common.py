"""Shared helpers for the benchmarks: percentiles, a loopback server, a throwaway repository."""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import uvicorn


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and mean in milliseconds."""
    ms = [v * 1000 for v in values]
    return {"p50": pct(ms, 0.5), "p95": pct(ms, 0.95), "p99": pct(ms, 0.99), "mean": statistics.fmean(ms)}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A uvicorn server on loopback in the current event loop."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **config)
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Server:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


def bare_repo() -> Path:
    """A bare git repository with one commit on ``main``, in a temp dir."""
    root = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    bare = root / "remote.git"
    seed = root / "seed"

    def run(*args: str, cwd: Path | None = None) -> None:
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)

    run("init", "--bare", "-b", "main", str(bare))
    run("clone", str(bare), str(seed))
    (seed / "README.md").write_text("bench\n")
    run("add", "-A", cwd=seed)
    run("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-m", "init", cwd=seed)
    run("push", "origin", "main", cwd=seed)
    return bare
