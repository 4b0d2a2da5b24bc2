"""The arq queue behind the :class:`core.ports.Queue` port, and the cancel signal channel."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.exceptions import RedisError

from core.errors import QueueUnavailable
from core.ports import JobRequest

CANCEL_CHANNEL = "handoff:cancel"
CANCEL_KEY = "handoff:cancel:{task_id}"
RUN_JOB = "run_task"


def job_id(task_id: str, gen: int) -> str:
    """The idempotent arq job id of one enqueue of a task: enqueueing it twice is a no-op."""
    return f"run:{task_id}:{gen}"


# arq 0.28's enqueue (WATCH, EXISTS, MULTI, PSETEX, ZADD: two round trips) as one atomic script,
# so a pipeline of them is one round trip for a whole burst. Same keys and job encoding as arq's.
_ENQUEUE = """
if redis.call('exists', KEYS[1], KEYS[2]) == 0 then
  redis.call('psetex', KEYS[1], ARGV[1], ARGV[2])
  redis.call('zadd', KEYS[3], ARGV[3], ARGV[4])
  return 1
end
return 0
"""


def redis_settings(url: str) -> RedisSettings:
    """arq settings for ``url`` that fail fast instead of retrying for seconds."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 0
    return settings


class ArqQueue:
    """Enqueue runs with arq; connect lazily so the API starts even while Redis is down."""

    def __init__(self, redis_url: str, queue_name: str) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self._pool: ArqRedis | None = None

    async def pool(self) -> ArqRedis:
        """The shared connection pool (redis-py reconnects by itself after Redis restarts)."""
        if self._pool is None:
            try:
                self._pool = await create_pool(
                    redis_settings(self.redis_url), default_queue_name=self.queue_name, retry=0
                )
            except (RedisError, OSError) as exc:
                raise QueueUnavailable(f"redis unavailable: {exc}") from exc
        return self._pool

    async def _call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        pool = await self.pool()
        try:
            return await getattr(pool, what)(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"redis unavailable: {exc}") from exc

    async def enqueue_run(self, task_id: str, gen: int, *, defer_s: float = 0.0) -> None:
        """Queue generation ``gen`` of ``task_id`` (a repeat with the same generation is a no-op)."""
        await self._call(
            "enqueue_job",
            RUN_JOB,
            task_id,
            gen,
            _job_id=job_id(task_id, gen),
            _queue_name=self.queue_name,
            _defer_by=defer_s or None,
        )

    async def enqueue_jobs(self, jobs: Sequence[JobRequest]) -> list[bool]:
        """Queue ``jobs`` in one pipeline (one round trip); ``False`` for an id already queued or done.

        Used by the ingress endpoints, which answer only once their job is queued."""
        if not jobs:
            return []
        pool = await self.pool()
        now_ms = int(time.time() * 1000)
        try:
            async with pool.pipeline(transaction=False) as pipe:
                for job in jobs:
                    score = now_ms + int(job.defer_s * 1000)
                    data = serialize_job(
                        job.function, job.args, {}, None, now_ms, serializer=pool.job_serializer
                    )
                    keys = [job_key_prefix + job.job_id, result_key_prefix + job.job_id, self.queue_name]
                    ttl = score - now_ms + pool.expires_extra_ms
                    script: Any = pipe  # redis' stubs type script arguments as str only
                    script.eval(_ENQUEUE, 3, *keys, ttl, data, score, job.job_id)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"redis unavailable: {exc}") from exc
        return [bool(r) for r in results]

    async def request_cancel(self, task_id: str) -> None:
        """Leave a cancel mark (for a worker that has not yet subscribed) and publish it."""
        await self._call("set", CANCEL_KEY.format(task_id=task_id), b"1", ex=3600)
        await self._call("publish", CANCEL_CHANNEL, task_id)

    async def ping(self) -> None:
        """Raise :class:`QueueUnavailable` unless Redis answers."""
        await self._call("ping")

    async def depth(self) -> int:
        """Jobs waiting in the queue (including deferred ones)."""
        return int(await self._call("zcard", self.queue_name))

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
