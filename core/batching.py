"""Group commit: what concurrent requests write goes out together, one round trip per burst.

Each caller still waits for its own item's write before it answers, so nothing is acknowledged
before it is durable; only the number of round trips drops — from one per delivery to one per
burst of deliveries that arrived while the previous write was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Batches ``submit`` calls into ``flush(items) -> results`` (same order), one flush at a time."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int = 200) -> None:
        self._flush = flush
        self.max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Write ``item`` with whatever else is waiting; return its result once written."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                results = await self._flush([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():  # a caller that gave up has a cancelled future
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def aclose(self) -> None:
        """Wait for the write in flight (at shutdown)."""
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner
