"""The arq queue behind the :class:`core.ports.Queue` port, and the cancel signal channel."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.exceptions import RedisError

from core.errors import QueueUnavailable

CANCEL_CHANNEL = "handoff:cancel"
CANCEL_KEY = "handoff:cancel:{task_id}"
RUN_JOB = "run_task"


def job_id(task_id: str, gen: int) -> str:
    """The idempotent arq job id of one enqueue of a task: enqueueing it twice is a no-op."""
    return f"run:{task_id}:{gen}"


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
