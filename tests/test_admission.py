"""Bursts admitted at once: every free slot filled in one admission pass, starts in creation order.

Real worker, real Docker, real git: tasks are posted to the API and run ``sleep`` in the sandbox.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from core.settings import Settings
from tests.support.env import LiveServer, running_worker, write_config
from tests.support.waiting import wait_for, wait_until


def _limits(settings: Settings, tmp_path: Path, **limits: Any) -> Settings:
    # The reaper's promotion pass is pushed far out: admission alone must fill the slots.
    config = write_config(tmp_path / "admission.yml", limits={"reaper_interval_s": 60, **limits})
    return settings.model_copy(update={"handoff_config": config})


async def _states(client: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    return [(await client.get(f"/api/tasks/{task_id}")).json() for task_id in ids]


async def test_a_burst_of_thirty_on_one_repository_runs_at_once(
    sqlite_settings: Settings, tmp_path: Path, bare_repo: Path
) -> None:
    from web.app import create_app

    cfg = _limits(sqlite_settings, tmp_path, max_running=30, per_repo=30)
    async with (
        LiveServer(create_app(cfg)) as api,
        httpx.AsyncClient(base_url=api.url, timeout=60) as client,
        running_worker(cfg),
    ):
        body = {"repo": str(bare_repo), "instructions": "sleep 30"}
        posted = await asyncio.gather(*(client.post("/api/tasks", json=body) for _ in range(30)))
        start = time.monotonic()
        ids = [r.json()["id"] for r in posted]

        async def all_running() -> bool:
            return all(t["state"] == "running" for t in await _states(client, ids))

        await wait_until(all_running, timeout=30, interval=0.2)
        took = time.monotonic() - start
        tasks = await _states(client, ids)
        for task_id in ids:
            await client.post(f"/api/tasks/{task_id}/cancel")
        for task_id in ids:
            await wait_for(client, task_id, timeout=60)
        waited = [
            e
            for task_id in ids
            for run in (await client.get(f"/api/tasks/{task_id}")).json()["runs"]
            for e in (await client.get(f"/api/runs/{run['id']}/events")).json()["items"]
            if e["type"] == "status" and e["data"].get("state") == "waiting"
        ]
    # All 30 leased within a few seconds of the burst, none sent to wait with 27 slots free.
    assert took < 5.0, f"the last of 30 tasks started {took:.1f} s after the burst"
    assert all(len(t["runs"]) == 1 for t in tasks)
    assert waited == []


async def test_starts_follow_creation_order_under_a_cap_of_two(
    sqlite_settings: Settings, tmp_path: Path, bare_repo: Path
) -> None:
    from web.app import create_app

    cfg = _limits(sqlite_settings, tmp_path, max_running=10, per_repo=2)
    async with (
        LiveServer(create_app(cfg)) as api,
        httpx.AsyncClient(base_url=api.url, timeout=60) as client,
    ):
        # Created one after the other (distinct creation times), before any worker runs: the
        # worker then finds all of them queued at once, the hardest case for the order.
        ids = []
        for n in range(8):
            body = {"repo": str(bare_repo), "instructions": f"sleep 1; echo {n} > out.txt"}
            ids.append((await client.post("/api/tasks", json=body)).json()["id"])
        async with running_worker(cfg):
            done = [await wait_for(client, task_id, timeout=120) for task_id in ids]
    assert [t["state"] for t in done] == ["succeeded"] * 8
    runs = [(t["runs"][0]["started_at"], t["runs"][0]["finished_at"]) for t in done]
    # Never more than two at once on the repository...
    edges = sorted([(s, 1) for s, _ in runs] + [(f, -1) for _, f in runs])
    live = list(itertools.accumulate(step for _, step in edges))
    assert max(live) <= 2, live
    # ... and no task starts before one created two or more places earlier: strict FIFO, with the
    # two of each pair free to start in either order.
    for i, j in itertools.combinations(range(8), 2):
        if j >= i + 2:
            assert runs[i][0] <= runs[j][0], (i, j, runs)


async def test_a_freed_slot_is_refilled_at_once(
    sqlite_settings: Settings, tmp_path: Path, bare_repo: Path
) -> None:
    from web.app import create_app

    cfg = _limits(sqlite_settings, tmp_path, max_running=1, per_repo=1)
    async with (
        LiveServer(create_app(cfg)) as api,
        httpx.AsyncClient(base_url=api.url, timeout=60) as client,
        running_worker(cfg),
    ):
        body = {"repo": str(bare_repo), "instructions": "sleep 1"}
        first = (await client.post("/api/tasks", json=body)).json()["id"]
        await wait_for(client, first, {"running"}, timeout=30)
        second = (await client.post("/api/tasks", json=body)).json()["id"]
        await wait_for(client, second, {"waiting"}, timeout=30)
        one = await wait_for(client, first, timeout=60)
        two = await wait_for(client, second, {"running", "succeeded"}, timeout=30)
    ended = datetime.fromisoformat(one["runs"][0]["finished_at"])
    gap = (datetime.fromisoformat(two["runs"][0]["started_at"]) - ended).total_seconds()
    assert 0 <= gap < 2.0, gap  # the reaper's pass would only come after 60 s
