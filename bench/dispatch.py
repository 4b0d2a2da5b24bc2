"""Dispatch latency: ``POST /api/tasks`` → the first event from inside the sandbox container.

Beside it, in the same run, the floor: a bare Docker create + start + first output line of the
same image. Prints p50/p95 of both and the overhead Handoff adds. Target: p50 overhead ≤ 250 ms.

Run with ``make bench`` (starts Redis and dockerd when needed) or, with services up,
``uv run python bench/dispatch.py [--tasks 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx
import yaml
from arq import Worker
from sqlalchemy import select
from sqlmodel import col

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, bare_repo, summary
from core.models import RunEvent
from core.settings import load_settings
from jobs.image import build_offline, image_exists
from jobs.worker import worker_kwargs
from web.app import create_app
from web.integrations import worker_services
from web.migrate import upgrade

IMAGE = "handoff-sandbox:minimal"
FIRST = '{"type": "progress", "data": {"step": "first"}}'


def bare_docker(client: docker.DockerClient, n: int) -> list[float]:
    """Create + start + first stdout line of the same image, ``n`` times."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        container = client.containers.create(IMAGE, ["sh", "-c", f"echo '{FIRST}'"], network_mode="none")
        container.start()
        for _chunk in container.logs(stream=True, follow=True):
            break
        samples.append(time.perf_counter() - start)
        container.remove(force=True)
    return samples


async def handoff_dispatch(n: int, redis_url: str) -> list[float]:
    """POST tasks one at a time; measure until their first agent event is stored."""
    work = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    config = work / "handoff.yml"
    config.write_text(yaml.safe_dump({"profiles": {"shell": {"image": IMAGE}}}))
    settings = load_settings(
        database_url=f"sqlite:///{work / 'bench.db'}",
        redis_url=redis_url,
        handoff_config=config,
        handoff_workspace_dir=work / "ws",
        handoff_mirror_dir=work / "mirrors",
        handoff_queue_name=f"handoff:bench:{os.getpid()}",
    )
    upgrade(settings.database_url)
    repo = bare_repo()
    wc = worker_services(settings)
    worker = Worker(**worker_kwargs(settings, wc, handle_signals=False))
    worker_task = asyncio.create_task(worker.async_run())
    samples = []
    async with Server(create_app(settings)) as api, httpx.AsyncClient(base_url=api.url) as client:
        for i in range(n + 2):
            posted = time.time()
            task = (
                await client.post("/api/tasks", json={"repo": str(repo), "instructions": f"echo '{FIRST}'"})
            ).json()
            while True:
                async with wc.sessions() as session:
                    row = (
                        await session.execute(
                            select(RunEvent)
                            .where(col(RunEvent.task_id) == task["id"], col(RunEvent.type) == "progress")
                            .where(col(RunEvent.data)["step"].as_string() == "first")
                        )
                    ).scalar_one_or_none()
                if row is not None:
                    break
                await asyncio.sleep(0.005)
            if i >= 2:  # two warm-up tasks (first clone, first container of the run)
                samples.append(row.ts.timestamp() - posted)
            while (await client.get(f"/api/tasks/{task['id']}")).json()["state"] not in (
                "succeeded",
                "failed",
            ):
                await asyncio.sleep(0.02)
    await worker.close()
    worker_task.cancel()
    return samples


def main() -> None:
    """Run both measurements and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=30)
    args = parser.parse_args()
    redis_url = os.environ.get("HANDOFF_TEST_REDIS_URL") or os.environ.get(
        "REDIS_URL", "redis://127.0.0.1:6379/0"
    )
    client = docker.DockerClient(version="1.41")
    if not image_exists(client, IMAGE):
        build_offline(client, variant="minimal")
    bare_docker(client, 2)  # warm-up
    floor: list[float] = []
    handoff: list[float] = []
    # Interleave the two so drift on the machine affects both alike.
    for _round in range(3):
        floor += bare_docker(client, args.tasks // 3)
        # A fresh event loop per round, as a separate process would have.
        handoff += asyncio.run(handoff_dispatch(args.tasks // 3, redis_url))
    f, h = summary(floor), summary(handoff)
    overhead = round(h["p50"] - f["p50"], 1)
    report: dict[str, object] = {
        "tasks": len(handoff),
        "bare_docker_ms": {k: round(v, 1) for k, v in f.items()},
        "handoff_ms": {k: round(v, 1) for k, v in h.items()},
        "overhead_p50_ms": round(h["p50"] - f["p50"], 1),
        "overhead_p95_ms": round(h["p95"] - f["p95"], 1),
        "ratio_p50": round(h["p50"] / f["p50"], 2),
        "target": "p50 overhead <= 250 ms",
    }
    print(json.dumps(report, indent=2))
    print(
        f"dispatch p50 {h['p50']:.0f} ms vs bare docker {f['p50']:.0f} ms: "
        f"+{overhead:.0f} ms ({'meets' if overhead <= 250 else 'MISSES'} target)"
    )


if __name__ == "__main__":
    main()
