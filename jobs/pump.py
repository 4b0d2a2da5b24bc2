"""Batches an agent's stdout lines into stored run events.

Lines arrive one by one on the event loop; writing each in its own transaction would make a chatty
agent cost one commit per line. The pump collects them and writes a batch every ``interval`` seconds
(or sooner when ``max_batch`` lines are waiting), keeping the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from core.clock import utcnow
from core.db import Sessions
from core.events import ParsedEvent, parse_line
from core.journal import append_events
from core.models import EventType

log = logging.getLogger(__name__)


class EventPump:
    """Parse and store the event lines of one run."""

    def __init__(
        self, sessions: Sessions, task_id: str, run_id: str, *, interval: float = 0.05, max_batch: int = 500
    ) -> None:
        self.sessions = sessions
        self.task_id = task_id
        self.run_id = run_id
        self.interval = interval
        self.max_batch = max_batch
        self._pending: list[ParsedEvent] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.summary: str | None = None
        self.result: dict[str, Any] | None = None
        self.count = 0

    def start(self) -> None:
        """Start the background writer."""
        self._task = asyncio.create_task(self._loop(), name=f"pump-{self.run_id}")

    def push(self, line: str) -> None:
        """Accept one stdout line (called on the event loop)."""
        event = parse_line(line)
        if event.type == EventType.result.value:
            self.result = event.data
            summary = event.data.get("summary")
            if isinstance(summary, str):
                self.summary = summary
        self._pending.append(event)
        self.count += 1
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    def add(self, type_: str, data: dict[str, Any]) -> None:
        """Queue an event produced by Handoff itself (not the agent)."""
        self._pending.append(ParsedEvent(type_, utcnow(), data))

    async def _loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # the database may be restarting: keep the lines, try again
                log.warning("could not store events of run %s yet: %s", self.run_id, exc)
                await asyncio.sleep(0.5)

    async def flush(self) -> None:
        """Write every pending event now."""
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                async with self.sessions.begin() as session:
                    await append_events(session, self.task_id, self.run_id, batch)
            except Exception:
                # Keep the events for the next flush rather than lose them; the caller's final
                # flush raises if the database stays down.
                self._pending[:0] = batch
                raise

    async def close(self) -> None:
        """Stop the writer and store whatever is left."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
