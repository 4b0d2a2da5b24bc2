"""The arq worker: settings, start-up (orphan clean-up, cancel listener) and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq.cron import CronJob, cron
from arq.worker import func
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlmodel import col

from core.db import is_database_outage
from core.errors import DependencyUnavailable
from core.models import Run
from core.ports import Schedule
from core.settings import Settings
from core.states import RunOutcome
from jobs.dependencies import DATABASE
from jobs.intake import HandoffWorker, retry_on_outage, skip_on_outage
from jobs.outbox import OutboxSender
from jobs.queue import CANCEL_CHANNEL, RUN_JOB, redis_settings
from jobs.reaper import reap
from jobs.runner import run_task
from jobs.services import WorkerServices, build_worker_services

log = logging.getLogger(__name__)

# Dispatch latency matters more than Redis load: poll every 50 ms.
POLL_DELAY_S = 0.05
ORPHAN_SWEEP_S = 10.0


async def startup(ctx: dict[str, Any]) -> None:
    """arq ``on_startup``: remove orphans, listen for cancels, start the outbox sender."""
    wc: WorkerServices = ctx["handoff"]
    # Before taking jobs (so no container of ours can be mistaken for an orphan), but bounded: a
    # slow Docker engine must not keep the worker from starting; the reaper removes containers of
    # dead runs anyway.
    try:
        await asyncio.wait_for(remove_orphans(wc), ORPHAN_SWEEP_S)
    except TimeoutError:
        log.warning("orphan sweep did not finish within %g s; continuing", ORPHAN_SWEEP_S)
    except Exception as exc:
        if not is_database_outage(exc):
            raise
        # Starting while the database is away: the reaper removes containers of dead runs later.
        wc.gate.lost(DATABASE, exc)
        log.warning("orphan sweep skipped: database unavailable (%s)", exc)
    ctx["cancel_listener"] = asyncio.create_task(listen_for_cancels(wc), name="cancel-listener")
    stop = asyncio.Event()
    sender = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox)
    ctx["outbox_stop"] = stop
    ctx["outbox_sender"] = sender
    ctx["outbox_task"] = asyncio.create_task(sender.run(stop), name="outbox-sender")


async def shutdown(ctx: dict[str, Any]) -> None:
    """arq ``on_shutdown``: stop the listener and the sender, release connections."""
    for name in ("cancel_listener",):
        background: asyncio.Task[Any] | None = ctx.pop(name, None)
        if background is not None:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await background
    stop: asyncio.Event | None = ctx.pop("outbox_stop", None)
    sender_task: asyncio.Task[None] | None = ctx.pop("outbox_task", None)
    if stop is not None and sender_task is not None:
        stop.set()
        try:
            await asyncio.wait_for(sender_task, 10)
        except (TimeoutError, Exception) as exc:
            log.warning("outbox sender did not stop cleanly: %s", exc)
    wc: WorkerServices = ctx["handoff"]
    await wc.close()


async def remove_orphans(wc: WorkerServices) -> list[str]:
    """Remove containers labelled for runs that are no longer running."""
    async with wc.sessions() as session:
        rows = await session.execute(select(col(Run.id)).where(col(Run.outcome) == RunOutcome.running.value))
        live = {str(r) for r in rows.scalars()}
    try:
        removed = await wc.sandbox.remove_orphans(live)
    except DependencyUnavailable as exc:
        log.warning("could not look for orphaned containers: %s", exc)
        return []
    if removed:
        log.info("removed %d orphaned container(s): %s", len(removed), ", ".join(removed))
    return removed


async def listen_for_cancels(wc: WorkerServices) -> None:
    """Set the cancel event of a running task when a cancel request is published."""
    while True:
        try:
            pool = await wc.queue.pool()
            pubsub = pool.pubsub()
            await pubsub.subscribe(CANCEL_CHANNEL)
            try:
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        continue
                    raw = message.get("data")
                    task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
                    event = wc.active.get(task_id)
                    if event is not None:
                        log.info("cancel requested for task %s", task_id)
                        event.set()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, DependencyUnavailable) as exc:
            # Redis restarting: the database flag polled by each run still delivers the cancel.
            log.warning("cancel listener lost redis (%s); reconnecting", exc)
            await asyncio.sleep(1.0)


async def reconcile(ctx: dict[str, Any]) -> None:
    """arq cron: let integrations catch up on what they missed (e.g. failed GitHub deliveries)."""
    wc: WorkerServices = ctx["handoff"]
    for integration in wc.integrations:
        reconciler = integration.reconciler
        if reconciler is not None:
            try:
                await reconciler.reconcile()
            except Exception as exc:  # one integration's outage must not stop the others
                log.warning("%s reconciler failed: %s", integration.name, exc)


def _options(values: frozenset[int] | None) -> set[int] | None:
    return None if values is None else set(values)


def schedule_cron(schedule: Schedule) -> CronJob:
    """The arq cron job of ``schedule`` (its job gets arq's ``ctx``; ``ctx["job_id"]`` names the
    scheduled time, the same on every worker)."""
    f = schedule.fields
    return cron(
        skip_on_outage(schedule.job),
        name=f"schedule:{schedule.name}",
        month=_options(f.month),
        day=_options(f.day),
        weekday=_options(f.weekday),
        hour=_options(f.hour),
        minute=_options(f.minute),
        second=set(f.second),
        unique=True,
        timeout=300,
    )


def worker_kwargs(settings: Settings, wc: WorkerServices | None = None, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for :class:`arq.Worker` with explicit limits.

    The job timeout sits above the longest sandbox deadline: the sandbox kills the container at
    its own deadline, arq's timeout is only the backstop.
    """
    wc = wc or build_worker_services(settings)
    longest = max(p.limits.timeout_s for p in wc.config.profiles.values())
    kwargs: dict[str, Any] = {
        "functions": [
            func(retry_on_outage(run_task), name=RUN_JOB, timeout=longest + 300, max_tries=1000),
            # Integrations' own jobs (e.g. turning a recorded GitHub delivery into a task).
            *(
                func(retry_on_outage(job), name=name, timeout=120, max_tries=50)
                for integration in wc.integrations
                for name, job in integration.jobs.items()
            ),
        ],
        "cron_jobs": [
            cron(
                skip_on_outage(reap),
                name="reaper",
                second=set(range(0, 60, wc.config.limits.reaper_interval_s)),
                unique=True,
                run_at_startup=True,
                timeout=120,
            ),
            cron(
                skip_on_outage(reconcile),
                name="reconciler",
                minute=set(range(0, 60, 5)),
                unique=True,
                timeout=300,
            ),
            # Scheduled automation rules: unique, so one worker runs each firing.
            *(schedule_cron(s) for integration in wc.integrations for s in integration.schedules),
        ],
        "queue_name": settings.handoff_queue_name,
        "redis_settings": redis_settings(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"handoff": wc},
        # Runs are admitted by the database (global and per-repo caps); the extra slots keep
        # short integration jobs flowing while every run slot is busy.
        "max_jobs": wc.config.limits.max_running + 10,
        "job_timeout": longest + 300,
        "poll_delay": POLL_DELAY_S,
        "keep_result": 3600,
        "job_completion_wait": int(wc.config.limits.shutdown_grace_s),
        "max_tries": 1000,
    }
    kwargs.update(overrides)
    return kwargs


def create_worker(settings: Settings, wc: WorkerServices | None = None, **overrides: Any) -> HandoffWorker:
    """Build the worker for ``settings``: arq's, made to outlive Redis, database and Docker outages."""
    kwargs = worker_kwargs(settings, wc, **overrides)
    return HandoffWorker(gate=kwargs["ctx"]["handoff"].gate, **kwargs)
