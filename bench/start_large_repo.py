"""Time to the agent's first event on a large repository: warm mirror vs a full clone per run.

A repository of realistic size (:mod:`bench.large_repo`: 50,000 commits, 20,000 files, ~300 MB of
history, generated once and cached) is served over git's smart HTTP on loopback, as a network
remote would be. Handoff runs tasks on it — ``POST /api/tasks`` until the first event printed
inside the sandbox is stored — twice in the same run: with the per-host mirror cache (warm: the
first task fills it and is not counted) and with every run cloning the remote itself. Target:
p50 ≤ 1.5 s with a warm mirror and ≥ 10 times faster than the full clone.

``uv run python bench/start_large_repo.py [--tasks 10] [--clones 3] [--history-depth 1]``
(``--small`` for a quick check on a small repository).
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

import httpx
import yaml
from arq import Worker
from sqlalchemy import select
from sqlmodel import col

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, summary
from bench.large_repo import SmartHTTP, generate, pack_bytes
from core.models import RunEvent
from core.settings import load_settings
from jobs.worker import worker_kwargs
from web.app import create_app
from web.integrations import worker_services
from web.migrate import upgrade

IMAGE = "handoff-sandbox:minimal"
FIRST = '{"type": "progress", "data": {"step": "first"}}'


async def first_events(
    url: str, n: int, *, mirror: bool, depth: int, redis_url: str, where: str | None
) -> list[float]:
    """Seconds from POST to the first agent event for ``n`` tasks (plus one uncounted warm-up)."""
    work = Path(tempfile.mkdtemp(prefix="handoff-bench-large-", dir=where))
    config = work / "handoff.yml"
    profile = {"image": IMAGE, "history_depth": depth, "limits": {"timeout_s": 600}}
    config.write_text(yaml.safe_dump({"profiles": {"shell": profile}, "limits": {"max_running": 1}}))
    settings = load_settings(
        database_url=f"sqlite:///{work / 'bench.db'}",
        redis_url=redis_url,
        handoff_config=config,
        handoff_workspace_dir=work / "ws",
        handoff_mirror=mirror,
        handoff_mirror_dir=work / "mirrors",
        handoff_queue_name=f"handoff:bench-large:{os.getpid()}:{mirror}",
    )
    upgrade(settings.database_url)
    wc = worker_services(settings)
    worker = Worker(**worker_kwargs(settings, wc, handle_signals=False))
    worker_task = asyncio.create_task(worker.async_run())
    samples: list[float] = []
    async with Server(create_app(settings)) as api, httpx.AsyncClient(base_url=api.url, timeout=60) as client:
        for i in range(n + 1):
            posted = time.time()
            body = {"repo": url, "instructions": f"echo '{FIRST}'"}
            task = (await client.post("/api/tasks", json=body)).json()
            while True:
                async with wc.sessions() as session:
                    row = (
                        await session.execute(
                            select(RunEvent)
                            .where(col(RunEvent.task_id) == task["id"], col(RunEvent.type) == "progress")
                            .where(col(RunEvent.data)["step"].as_string() == "first")
                        )
                    ).scalar_one_or_none()
                    state = (await client.get(f"/api/tasks/{task['id']}")).json()
                if row is not None:
                    break
                if state["state"] in ("failed", "cancelled"):
                    raise RuntimeError(f"task failed: {state['state_reason']}")
                await asyncio.sleep(0.01)
            if i >= 1 or not mirror:  # the first mirrored task fills the cache
                samples.append(row.ts.timestamp() - posted)
            while (await client.get(f"/api/tasks/{task['id']}")).json()["state"] not in (
                "succeeded",
                "failed",
            ):
                await asyncio.sleep(0.05)
            if not mirror and len(samples) >= n:
                break
    await worker.close()
    worker_task.cancel()
    return samples


def main() -> None:
    """Generate (once), serve, measure both modes, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10, help="warm-mirror tasks")
    parser.add_argument("--clones", type=int, default=3, help="full-clone tasks")
    parser.add_argument("--history-depth", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="2,000 commits over 2,000 files")
    parser.add_argument(
        "--workspace-parent",
        default=None,
        help="directory for the workspaces and mirrors (e.g. /dev/shm, to take the disk's file "
        "creation cost out of the comparison); default: the system's temp directory",
    )
    args = parser.parse_args()
    redis_url = os.environ.get("HANDOFF_TEST_REDIS_URL") or os.environ.get(
        "REDIS_URL", "redis://127.0.0.1:6379/0"
    )
    started = time.monotonic()
    repo = generate(commits=2_000, files=2_000) if args.small else generate()
    print(
        f"repository: {repo.name}, {pack_bytes(repo) / 1e6:.0f} MB packed ({time.monotonic() - started:.0f} s)"
    )
    with SmartHTTP(repo.parent) as http:
        url = f"{http.url}/{repo.name}"
        depth, where = args.history_depth, args.workspace_parent
        warm = asyncio.run(
            first_events(url, args.tasks, mirror=True, depth=depth, redis_url=redis_url, where=where)
        )
        cold = asyncio.run(
            first_events(url, args.clones, mirror=False, depth=depth, redis_url=redis_url, where=where)
        )
    w, c = summary(warm), summary(cold)
    report = {
        "repository_mb": round(pack_bytes(repo) / 1e6),
        "history_depth": args.history_depth,
        "workspace_parent": args.workspace_parent or tempfile.gettempdir(),
        "warm_mirror_s": {k: round(v / 1000, 2) for k, v in w.items()},
        "full_clone_s": {k: round(v / 1000, 2) for k, v in c.items()},
        "speedup_p50": round(c["p50"] / w["p50"], 1),
        "target": "warm p50 <= 1.5 s and >= 10x the full clone",
    }
    print(json.dumps(report, indent=2))
    ok = w["p50"] <= 1500 and c["p50"] / w["p50"] >= 10
    print(
        f"first event p50: warm mirror {w['p50'] / 1000:.2f} s, full clone {c['p50'] / 1000:.2f} s "
        f"({report['speedup_p50']}x) — {'meets' if ok else 'MISSES'} target"
    )


if __name__ == "__main__":
    main()
