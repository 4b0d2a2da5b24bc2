"""Batches an agent's stdout lines into stored run events.

Lines arrive one by one on the event loop; writing each in its own transaction would make a chatty
agent cost one commit per line. The pump collects them and writes a batch every ``interval`` seconds
(or sooner when ``max_batch`` lines are waiting), keeping the order. It also adds up the token and
cost usage that agents report in their events (``data.usage``) so budgets can be enforced live.

Every event is redacted (:class:`core.redact.Redactor`) before it is stored: whatever an agent
printed — a token from an environment dump, a key in a file it read — never reaches the database,
and so never the dashboard, a GitHub comment or a Slack message built from events.

What an agent prints is bounded (:class:`core.config.OutputLimits`): past ``max_events`` or
``max_bytes`` per run its events are counted (their usage still counts against budgets) but not
stored, with one note saying so; while the database lags, at most ``max_pending`` of them wait in
memory and the rest are dropped, with a note once writing resumes. Handoff's own milestones
(``progress``, ``result``, ``error``, ``question`` it adds itself) are never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from core.clock import utcnow
from core.config import OutputLimits
from core.db import Sessions
from core.events import AGENT_TYPES, ParsedEvent, parse_line
from core.journal import Journal
from core.models import EventType, Task
from core.redact import Redactor
from core.usage import TokenUsage

log = logging.getLogger(__name__)
# Handoff's own events of these types may be dropped like an agent's (the built-in agent's
# messages and tool calls are as plentiful as a CLI's output).
_BULK = frozenset(
    {EventType.log.value, EventType.tool.value, EventType.message.value, EventType.heartbeat.value}
)


class EventPump:
    """Parse and store the event lines of one run."""

    def __init__(
        self,
        sessions: Sessions,
        journal: Journal,
        task: Task,
        run_id: str,
        *,
        on_usage: Callable[[int, float], None] | None = None,
        interval: float = 0.05,
        max_batch: int = 500,
        redactor: Redactor | None = None,
        limits: OutputLimits | None = None,
        count_agent_usage: bool = True,
    ) -> None:
        """``count_agent_usage=False``: the run's model gateway meters its tokens, so what the
        agent reports about its own usage is stored but not counted."""
        self.sessions = sessions
        self.journal = journal
        self.task = task
        self.run_id = run_id
        self.on_usage = on_usage
        self.count_agent_usage = count_agent_usage
        self.redactor = redactor or Redactor()
        self.limits = limits or OutputLimits()
        self.interval = interval
        self.max_batch = max_batch
        self._pending: list[ParsedEvent] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.summary: str | None = None
        self.findings: Any = None
        self.count = 0  # events accepted for storage
        self.bytes = 0
        self.over_cap = 0  # agent events past the per-run caps, counted but not stored
        self.lost = 0  # events dropped while the database lagged, not yet reported
        self.lost_total = 0
        # What the run's events reported (see ``count_agent_usage``).
        self.usage = TokenUsage()

    def start(self) -> None:
        """Start the background writer."""
        self._task = asyncio.create_task(self._loop(), name=f"pump-{self.run_id}")

    def push(self, line: str) -> None:
        """Accept one stdout line of the agent (called on the event loop)."""
        self._accept(parse_line(line), agent=True)

    def add_agent(self, type_: str, data: dict[str, Any]) -> None:
        """Queue an event translated from an agent's output: only agent types, always capped."""
        if type_ not in AGENT_TYPES:
            data, type_ = (
                {"text": json.dumps({"type": type_, "data": data}, default=str)},
                EventType.log.value,
            )
        self._accept(ParsedEvent(type_, utcnow(), data), agent=True)

    def add(self, type_: str, data: dict[str, Any]) -> None:
        """Queue an event produced by Handoff itself (not the agent)."""
        self._accept(ParsedEvent(type_, utcnow(), data), agent=False)

    def _accept(self, event: ParsedEvent, *, agent: bool) -> None:
        event = ParsedEvent(event.type, event.ts, self.redactor.data(event.data))
        usage = TokenUsage.of_event(event.data)
        if usage is not None and (self.count_agent_usage or not agent):
            self.usage += usage
            if self.on_usage is not None:
                self.on_usage(self.usage.tokens, self.usage.cost_usd)
        if event.type == EventType.result.value:
            summary = event.data.get("summary")
            if isinstance(summary, str):
                self.summary = summary
            if "findings" in event.data:  # review mode; untrusted, checked by core.review
                self.findings = event.data["findings"]
        droppable = agent or event.type in _BULK
        size = len(json.dumps(event.data, default=str, ensure_ascii=False))
        limits = self.limits
        if droppable and (self.count >= limits.max_events or self.bytes + size > limits.max_bytes):
            if not self.over_cap:
                self._store(
                    ParsedEvent(
                        EventType.log.value,
                        utcnow(),
                        {
                            "text": f"[handoff] output past {limits.max_events} events or "
                            f"{limits.max_bytes} bytes is not stored for this run",
                            "truncated": True,
                        },
                    ),
                    0,
                )
            self.over_cap += 1
            return
        if droppable and len(self._pending) >= limits.max_pending:
            self.lost += 1
            self.lost_total += 1
            return
        self._store(event, size)

    def _store(self, event: ParsedEvent, size: int) -> None:
        self._pending.append(event)
        self.count += 1
        self.bytes += size
        if len(self._pending) >= self.max_batch:
            self._wake.set()

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
        if self.lost and len(self._pending) < self.limits.max_pending:
            text = f"[handoff] {self.lost} events were not stored while the database was unavailable"
            self._store(ParsedEvent(EventType.log.value, utcnow(), {"text": text, "lost": self.lost}), 0)
            self.lost = 0
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                async with self.sessions.begin() as session:
                    await self.journal.append_events(session, self.task, self.run_id, batch)
            except Exception:
                # Keep the events for the next flush rather than lose them.
                self._pending[:0] = batch
                raise

    async def close(self) -> None:
        """Stop the writer and store whatever is left (retrying briefly if the database blinks)."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for delay in (0.2, 0.5, 1.0, 2.0, 0):
            try:
                await self.flush()
                return
            except Exception as exc:
                if not delay:
                    raise
                log.warning("retrying the final event write of run %s: %s", self.run_id, exc)
                await asyncio.sleep(delay)
