"""Probes and metrics.

``/livez`` (the process answers), ``/readyz`` (what the API needs to serve: the database and Redis),
``/healthz`` (every dependency, Docker included, each reported) and ``/metrics`` (Prometheus).
The API does not need Docker (in a compose deployment it has no socket); the worker does, and
``handoff doctor`` reports it there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from arq.constants import health_check_key_suffix
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy import select, text
from sqlmodel import col

from core.errors import HandoffError, QueueUnavailable
from core.models import Run
from core.ports import Queue
from core.services import Services
from core.states import RunOutcome, TaskState
from jobs.queue import ArqQueue
from web.deps import ServicesDep

router = APIRouter(tags=["operations"])

DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# `handoff worker` and `handoff up` record arq's health key this often (arq's default is an hour).
WORKER_HEALTH_INTERVAL_S = 10


@dataclass(frozen=True)
class WorkerBeat:
    """The newest report of a live arq worker (the key expires one interval after it was written)."""

    age_s: float
    info: str


async def last_worker_beat(queue: Queue) -> WorkerBeat | None:
    """What the last live worker reported, or ``None`` when no worker reported lately."""
    if not isinstance(queue, ArqQueue):
        return None
    pool = await queue.pool()
    key = queue.queue_name + health_check_key_suffix
    try:
        raw, ttl_ms = await asyncio.gather(pool.get(key), pool.pttl(key))
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(f"redis unavailable: {exc}") from exc
    if raw is None:
        return None
    age = max(0.0, WORKER_HEALTH_INTERVAL_S + 1 - ttl_ms / 1000) if ttl_ms and ttl_ms > 0 else 0.0
    info = raw.decode() if isinstance(raw, bytes) else str(raw)
    return WorkerBeat(age_s=round(age, 1), info=info.split(" ", 2)[-1])


async def _check(fn: Callable[[], Awaitable[Any]], limit_s: float = 3.0) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(fn(), limit_s)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {limit_s:g} s"}
    except (HandoffError, OSError, Exception) as exc:  # report every failure, never crash the probe
        return {"ok": False, "error": str(exc) or type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 1)}


async def check_dependencies(svc: Services, docker: bool = True) -> dict[str, dict[str, Any]]:
    """Check the database, Redis and (unless ``docker`` is false) Docker concurrently."""

    async def database() -> None:
        async with svc.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    probes: dict[str, Callable[[], Awaitable[Any]]] = {"database": database, "redis": svc.queue.ping}
    if docker:
        probes["docker"] = svc.sandbox.ping
    results = await asyncio.gather(*(_check(probe) for probe in probes.values()))
    return dict(zip(probes, results, strict=True))


def _report(checks: dict[str, dict[str, Any]]) -> JSONResponse:
    ok = all(c["ok"] for c in checks.values())
    headers = None if ok else {"Retry-After": "5"}
    return JSONResponse({"ok": ok, "checks": checks}, status_code=200 if ok else 503, headers=headers)


@router.get("/livez")
async def livez() -> dict[str, bool]:
    """200 while the process and its event loop answer (restart the process when this fails)."""
    return {"ok": True}


@router.get("/readyz")
async def readyz(svc: ServicesDep) -> JSONResponse:
    """200 when the API can serve (database and Redis answer), else 503 naming what is down."""
    return _report(await check_dependencies(svc, docker=False))


@router.get("/healthz")
async def healthz(svc: ServicesDep) -> JSONResponse:
    """200 when every dependency answers, Docker included, else 503; each dependency is reported."""
    return _report(await check_dependencies(svc))


class _Snapshot(Collector):
    """Metrics read at scrape time (the API process does not see runs end)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def collect(self) -> Iterable[Any]:
        tasks = GaugeMetricFamily("handoff_tasks", "Tasks by state", labels=["state"])
        for state in TaskState:
            tasks.add_metric([state.value], float(self.data["states"].get(state.value, 0)))
        yield tasks
        depth = self.data.get("queue_depth")
        if depth is not None:
            yield GaugeMetricFamily(
                "handoff_queue_depth", "Jobs waiting in the arq queue", value=float(depth)
            )
        worker = self.data.get("worker_up")
        if worker is not None:
            yield GaugeMetricFamily(
                "handoff_worker_up",
                f"1 when a worker reported in the last {WORKER_HEALTH_INTERVAL_S} s (arq health key)",
                value=float(worker),
            )
        durations: list[float] = self.data["durations"]
        buckets = [(str(b), float(sum(1 for d in durations if d <= b))) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", float(len(durations))))
        yield HistogramMetricFamily(
            "handoff_run_duration_seconds",
            "Duration of finished runs (the last 1,000)",
            buckets=buckets,
            sum_value=sum(durations),
        )


@router.get("/metrics")
async def metrics(svc: ServicesDep) -> Response:
    """Prometheus metrics: tasks by state, run durations, queue depth, whether a worker reports."""
    states = await svc.tasks.counts_by_state()
    try:
        depth: int | None = await asyncio.wait_for(svc.queue.depth(), 2.0)
        beat = await asyncio.wait_for(last_worker_beat(svc.queue), 2.0)
        worker_up: int | None = int(beat is not None)
    except (HandoffError, TimeoutError):
        depth = worker_up = None
    async with svc.sessions() as session:
        rows = await session.execute(
            select(Run)
            .where(col(Run.outcome) != RunOutcome.running.value, col(Run.finished_at).is_not(None))
            .order_by(col(Run.finished_at).desc())
            .limit(1000)
        )
        durations = [r.duration_s for r in rows.scalars() if r.duration_s is not None]
    registry = CollectorRegistry()
    snapshot = {"states": states, "queue_depth": depth, "worker_up": worker_up, "durations": durations}
    registry.register(_Snapshot(snapshot))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
