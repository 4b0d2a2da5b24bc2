"""The arq worker made to outlive its dependencies.

arq's own :class:`arq.Worker` exits with the first Redis error its poll loop meets (a restart, a
stale connection), leaks a job slot when Redis fails while it claims a job, and has no notion of
the database or Docker. :class:`HandoffWorker` keeps arq's queue protocol and changes only that:

* it connects to Redis with backoff instead of failing at start;
* a Redis error in the poll loop marks Redis down in the :class:`~jobs.dependencies.DependencyGate`
  and the loop waits for it to answer again, instead of ending the process;
* jobs are taken only while Redis and the database answer, and runs only while Docker does too
  (other jobs, such as turning a webhook into a task, keep flowing without Docker); cron jobs are
  not piled up while intake is paused, and resume from the next slot;
* a job whose end could not be written to Redis has its ``in-progress`` mark removed once Redis
  answers again, so it is not held for the job timeout (a second run of it is a no-op: jobs carry
  the queue generation of their task);
* a job that fails because a dependency went away is retried later (:func:`retry_on_outage`)
  rather than recorded as failed, and a cron pass is skipped (:func:`skip_on_outage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from datetime import datetime
from typing import Any, cast

from arq import Retry, Worker
from arq.connections import create_pool
from arq.constants import in_progress_key_prefix
from arq.typing import WorkerCoroutine
from arq.utils import poll, timestamp_ms
from redis.exceptions import RedisError, ResponseError, WatchError

from core.db import is_database_outage
from core.errors import DatabaseUnavailable, QueueUnavailable
from jobs.dependencies import DATABASE, REDIS, DependencyGate, describe

log = logging.getLogger(__name__)

# Run jobs are named ``run:<task>:<gen>`` (jobs.queue.job_id): they need Docker, other jobs do not.
RUN_JOB_PREFIX = b"run:"
_REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def outage_of(exc: BaseException) -> str | None:
    """The dependency whose absence caused ``exc``, or ``None`` for any other failure."""
    if isinstance(exc, QueueUnavailable | RedisError):
        return REDIS
    if isinstance(exc, DatabaseUnavailable) or is_database_outage(exc):
        return DATABASE
    return None


def retry_on_outage(job: WorkerCoroutine) -> WorkerCoroutine:
    """Wrap an arq job: a dependency outage becomes a later retry (with backoff), not a failure."""

    @functools.wraps(job)
    async def wrapper(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await job(ctx, *args, **kwargs)
        except Exception as exc:
            dependency = outage_of(exc)
            if dependency is None:
                raise
            gate: DependencyGate | None = getattr(ctx.get("handoff"), "gate", None)
            if gate is not None:
                gate.lost(dependency, exc)
            defer = min(30.0, 0.5 * 2 ** min(int(ctx.get("job_try", 1)), 6))
            log.warning(
                "job %s: %s unavailable (%s); retrying in %g s",
                ctx.get("job_id"),
                dependency,
                describe(exc),
                defer,
            )
            raise Retry(defer=defer) from exc

    return cast(WorkerCoroutine, wrapper)


def skip_on_outage(job: WorkerCoroutine) -> WorkerCoroutine:
    """Wrap a cron job: during a dependency outage this pass is skipped (the next one comes anyway)."""

    @functools.wraps(job)
    async def wrapper(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await job(ctx, *args, **kwargs)
        except Exception as exc:
            dependency = outage_of(exc)
            if dependency is None:
                raise
            gate: DependencyGate | None = getattr(ctx.get("handoff"), "gate", None)
            if gate is not None:
                gate.lost(dependency, exc)
            log.info("%s skipped: %s unavailable (%s)", ctx.get("job_id"), dependency, describe(exc))
            return None

    return cast(WorkerCoroutine, wrapper)


class HandoffWorker(Worker):
    """An arq worker whose intake pauses, instead of the process exiting, while a dependency is away."""

    def __init__(self, *args: Any, gate: DependencyGate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate
        self._gate_task: asyncio.Task[None] | None = None
        # Jobs whose in-progress mark we set but could not clear (Redis failed under them).
        self._unreleased: set[str] = set()
        self._intake_was_open = True

    async def main(self) -> None:
        """Connect (waiting for Redis), start up, then poll for jobs until stopped."""
        self._gate_task = asyncio.create_task(self.gate.run(), name="dependency-gate")
        await self._connect()
        log.info("worker for %d functions: %s", len(self.functions), ", ".join(self.functions))
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        async for _ in poll(self.poll_delay_s):
            if not self.gate.is_up(REDIS):
                await self.gate.wait_until_up(REDIS)
            try:
                await self._release_unreleased()
                await self._poll_iteration()
                if self.burst and await self._burst_done():
                    return
            except _REDIS_ERRORS as exc:
                self.gate.lost(REDIS, exc)

    async def _connect(self) -> None:
        while self._pool is None:
            try:
                self._pool = await create_pool(
                    self.redis_settings,
                    job_deserializer=self.job_deserializer,
                    job_serializer=self.job_serializer,
                    default_queue_name=self.queue_name,
                    expires_extra_ms=self.expires_extra_ms,
                )
            except _REDIS_ERRORS as exc:
                self.gate.lost(REDIS, exc)
                await self.gate.wait_until_up(REDIS)

    async def _burst_done(self) -> bool:
        if 0 <= self.max_burst_jobs <= self._jobs_started():
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            return True
        if await self.pool.zcard(self.queue_name) == 0:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            return True
        return False

    async def _poll_iteration(self) -> None:
        """arq's poll step, gated: take jobs only while their dependencies answer."""
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            remaining = self.max_burst_jobs - self._jobs_started()
            if remaining < 1:
                return
            count = min(remaining, count)
        intake = self.gate.intake_open()
        if intake and not self._intake_was_open:
            self._resume_crons()
        self._intake_was_open = intake
        if intake and self.allow_pick_jobs and self.job_counter < self.max_jobs:
            job_ids = await self.pool.zrangebyscore(
                self.queue_name,
                min=float("-inf"),
                start=self._queue_read_offset,
                num=count,
                max=timestamp_ms(),
            )
            if not self.gate.runs_open():
                job_ids = [j for j in job_ids if not j.startswith(RUN_JOB_PREFIX)]
            await self.start_jobs(job_ids)
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, t in list(self.tasks.items()):
            if t.done():
                del self.tasks[job_id]
                self._collect(job_id, t)
        if intake:
            # Cron jobs enqueued while intake is paused would only pile up.
            await self.heart_beat()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's claim of each job (in-progress mark under WATCH), without leaking a slot on errors."""
        for job_id_b in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            job_id = job_id_b.decode()
            in_progress_key = in_progress_key_prefix + job_id
            claimed = False
            try:
                async with self.pool.pipeline(transaction=True) as pipe:
                    await pipe.watch(in_progress_key)
                    ongoing = await pipe.exists(in_progress_key)
                    score = await pipe.zscore(self.queue_name, job_id)
                    # Not claimed when started elsewhere, finished, or deferred again meanwhile.
                    if not ongoing and score and score <= timestamp_ms():
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.psetex(in_progress_key, int(self.in_progress_timeout_s * 1000), b"1")
                        with contextlib.suppress(ResponseError, WatchError):  # claimed elsewhere first
                            await pipe.execute()
                            claimed = True
            finally:
                if not claimed:
                    self._release_slot()
            if not claimed:
                continue
            t = self.loop.create_task(self.run_job(job_id, int(score)))
            t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = t

    def _release_slot(self) -> None:
        self.job_counter -= 1
        self.sem.release()

    def _collect(self, job_id: str, t: asyncio.Task[Any]) -> None:
        """Look at a finished ``run_job``: arq raises its errors here, which would end the worker."""
        if t.cancelled():
            return
        exc = t.exception()
        if exc is None:
            return
        if isinstance(exc, _REDIS_ERRORS):
            # (The error may be old news: the poll loop tells the gate whether Redis answers now.)
            self._unreleased.add(job_id)
            log.warning("job %s: its start or end could not be recorded in Redis (%s)", job_id, describe(exc))
        else:
            log.error("job %s: arq failed around it", job_id, exc_info=exc)

    async def _release_unreleased(self) -> None:
        """Drop the in-progress marks of jobs that are not running here any more."""
        for job_id in list(self._unreleased):
            if job_id not in self.tasks:
                await self.pool.delete(in_progress_key_prefix + job_id)
            self._unreleased.discard(job_id)

    def _resume_crons(self) -> None:
        """After a pause, cron jobs continue from their next slot instead of catching up on each."""
        now = datetime.now(tz=self.timezone)
        for cron_job in self.cron_jobs:
            cron_job.calculate_next(now)

    async def close(self) -> None:
        """Stop; every step tolerates Redis being away (arq's would raise)."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if self._gate_task is not None:
            self._gate_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gate_task
            self._gate_task = None
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        with contextlib.suppress(*_REDIS_ERRORS):
            await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        with contextlib.suppress(*_REDIS_ERRORS):
            await self.pool.aclose(close_connection_pool=True)
        self._pool = None
