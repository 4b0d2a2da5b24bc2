"""The outbox sender: delivers notifications with coalescing, pacing, retries and a horizon.

One sender delivers at a time across the cluster (a lease in the ``lock`` table, renewed each pass),
so writes to one remote object are never concurrent and per-target pacing holds globally. A pass
starts deliveries and does not wait for them (a key with a delivery in flight is left for a later
pass); acknowledgements — the first feedback on a request — go first, in lanes of their own. Each
pass:

1. reads due ``pending`` rows (oldest first);
2. coalesces ``upsert`` rows per (channel, key): only the newest is sent, older ones become
   ``superseded`` — a burst of 1,000 progress events costs one write per pacing interval;
3. skips rows whose rate buckets (per object, per installation...) are not yet open;
4. delivers, then records ``sent``, or on :class:`RetryLater` the next attempt (the target's
   ``Retry-After`` or exponential backoff), or on :class:`GiveUp` / past the horizon ``failed`` with
   the reason.

Delivery is at-least-once; notifiers make it exactly-once in effect (stored remote ids in
``ExternalRef``, hidden markers looked up before re-creating).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from core.clock import utcnow
from core.config import OutboxConfig
from core.db import Sessions
from core.models import Lock, Outbox, OutboxState
from core.outbox import GiveUp, Notifier, RateRule, RetryLater, is_ack, mark_ack
from core.refs import RefStore
from jobs.dependencies import describe
from jobs.pacing import Pacing

log = logging.getLogger(__name__)

LEASE_NAME = "outbox-sender"
LEASE_S = 15.0


class OutboxSender:
    """Delivers outbox rows through the notifiers of their channels."""

    def __init__(
        self,
        sessions: Sessions,
        notifiers: Sequence[Notifier],
        config: OutboxConfig | None = None,
        *,
        holder: str | None = None,
        concurrency: int = 8,
    ) -> None:
        self.sessions = sessions
        self.notifiers = {n.channel: n for n in notifiers}
        self.config = config or OutboxConfig()
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.refs = RefStore(sessions)
        self.pacing = Pacing()
        self._inflight: dict[tuple[str, str], asyncio.Task[None]] = {}  # (channel, key) -> delivery
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self.delivered = 0
        self._lease_until = 0.0  # loop time until which our lease certainly holds

    def wake(self) -> None:
        """Start the next pass now (e.g. right after a row was written in this process)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; survive database and target outages."""
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        warned = float("-inf")
        pause = self.config.poll_s
        while not stop.is_set():
            try:
                if await self.acquire_lease():
                    await self.dispatch()
            except Exception as exc:
                # The database is away (or a pass failed for another reason): back off, and say
                # so every few seconds rather than at every poll.
                now = loop.time()
                failing_since = now if failing_since is None else failing_since
                pause = min(max(pause * 2, self.config.poll_s), 5.0)
                if now - warned >= 5.0:
                    warned = now
                    log.warning(
                        "outbox passes failing for %.0f s (%s); retrying",
                        now - failing_since,
                        describe(exc),
                    )
            else:
                if failing_since is not None:
                    log.warning("outbox delivering again after %.1f s", loop.time() - failing_since)
                failing_since, warned, pause = None, float("-inf"), self.config.poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            self._wake.clear()
        # Let the writes in flight end (each records its outcome) before another sender may start.
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self.release_lease()

    async def acquire_lease(self) -> bool:
        """Take or renew the cluster-wide sender lease; False when another sender holds it."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._lease_until - LEASE_S / 2:
            return True  # renewing on every pass would cost a write every poll interval
        ok = await self._take_lease()
        self._lease_until = loop.time() + LEASE_S if ok else 0.0
        return ok

    async def _take_lease(self) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=LEASE_S)
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Lock)
                .where(col(Lock.name) == LEASE_NAME)
                .where((col(Lock.holder) == self.holder) | (col(Lock.expires_at) < now))
                .values(holder=self.holder, expires_at=until)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return True
        try:
            async with self.sessions.begin() as session:
                if await session.get(Lock, LEASE_NAME) is not None:
                    return False
                session.add(Lock(name=LEASE_NAME, holder=self.holder, expires_at=until))
            return True
        except IntegrityError:
            return False

    async def release_lease(self) -> None:
        """Let another sender take over at once (on shutdown)."""
        self._lease_until = 0.0
        with contextlib.suppress(Exception):
            async with self.sessions.begin() as session:
                await session.execute(
                    update(Lock)
                    .where(col(Lock.name) == LEASE_NAME, col(Lock.holder) == self.holder)
                    .values(expires_at=utcnow() - timedelta(seconds=1))
                )

    async def tick(self, limit: int = 500) -> int:
        """One pass over due rows, waiting for its deliveries; return how many were delivered."""
        before = self.delivered
        await asyncio.gather(*await self.dispatch(limit))
        return self.delivered - before

    async def dispatch(self, limit: int = 500) -> list[asyncio.Task[None]]:
        """Start delivering the due rows of every key with no delivery in flight; return those starts.

        A pass never waits for the writes it started: a write held by its target's pacing must not
        delay the next pass, which may bring an acknowledgement that goes in a lane of its own.
        """
        now = utcnow()
        async with self.sessions() as session:
            rows = list(
                (
                    await session.execute(
                        select(Outbox)
                        .where(
                            col(Outbox.state) == OutboxState.pending.value, col(Outbox.next_attempt_at) <= now
                        )
                        .order_by(col(Outbox.id))
                        .limit(limit)
                    )
                ).scalars()
            )
        groups: dict[tuple[str, str], list[Outbox]] = {}
        for row in rows:
            if (row.channel, row.key) not in self._inflight:  # one write at a time per object
                groups.setdefault((row.channel, row.key), []).append(row)
        if not groups:
            return []
        superseded: list[int] = []
        work: list[list[Outbox]] = []
        for group in groups.values():
            upserts = [r for r in group if r.kind == "upsert"]
            if upserts:
                *older, newest = upserts
                superseded.extend(r.id for r in older if r.id is not None)
                # A state change folded into a later progress update keeps its urgency, and the
                # first feedback on a request (the object does not exist yet) stays an acknowledgement.
                newest.urgent = newest.urgent or any(r.urgent for r in older)
                if any(is_ack(r) for r in older) and not is_ack(newest):
                    mark_ack(newest)
                # Keep the group's order: appends before the newest upsert stay before it.
                group = [r for r in group if r.kind != "upsert" or r is newest]
            work.append(group)
        # Acknowledgements first: they have lanes of their own, and go ahead of every other write.
        work.sort(key=lambda g: not any(is_ack(r) for r in g))
        if superseded:
            async with self.sessions.begin() as session:
                await session.execute(
                    update(Outbox)
                    .where(col(Outbox.id).in_(superseded), col(Outbox.state) == OutboxState.pending.value)
                    .values(state=OutboxState.superseded.value)
                )
        started = []
        for group in work:
            key = (group[0].channel, group[0].key)
            task = asyncio.create_task(self._deliver_group(group), name=f"outbox-{key[1]}")
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._landed, key))
            started.append(task)
        return started

    def _landed(self, key: tuple[str, str], _task: asyncio.Task[None]) -> None:
        self._inflight.pop(key, None)

    async def _deliver_group(self, group: list[Outbox]) -> None:
        # Rows of one key go in order; stop at the first that cannot go now.
        for row in group:
            if not await self._deliver(row):
                return

    async def _deliver(self, row: Outbox) -> bool:
        notifier = self.notifiers.get(row.channel)
        if notifier is None:
            await self._finish(row, OutboxState.failed, error=f"no notifier for channel {row.channel!r}")
            return False
        loop = asyncio.get_running_loop()
        rules = self._rules(notifier, row)
        if not self.pacing.ready(rules, loop.time()):
            return False  # paced: the row stays pending and is looked at again next pass
        self.pacing.take(rules, loop.time())
        async with self._sem:
            try:
                await notifier.deliver(row, self.refs)
            except RetryLater as exc:
                await self._retry_later(row, exc, rules)
                return False
            except GiveUp as exc:
                await self._finish(row, OutboxState.failed, error=f"gave up: {exc}")
                return True
            except Exception as exc:  # an unexpected client error: back off and try again
                log.exception("delivering outbox row %s failed", row.id)
                await self._retry_later(row, RetryLater(f"{type(exc).__name__}: {exc}"), rules)
                return False
        self.delivered += 1
        await self._finish(row, OutboxState.sent)
        return True

    def _rules(self, notifier: Notifier, row: Outbox) -> list[RateRule]:
        """The notifier's rules (less per-object pacing for urgent rows), plus progress pacing.

        An urgent row is not held back by progress pacing, but its write restarts that clock.
        """
        rules = [r for r in notifier.rate_rules(row) if not (row.urgent and r.per_object)]
        progress = self.config.progress_interval_s.get(row.channel, 0.0)
        if row.kind == "upsert" and progress > 0:
            bucket = f"progress:{row.channel}:{row.key}"
            if row.urgent:
                self.pacing.reset(bucket)
            rules.append(RateRule(bucket, progress))
        return rules

    async def _retry_later(self, row: Outbox, exc: RetryLater, rules: Sequence[Any]) -> None:
        attempts = row.attempts + 1
        age = (utcnow() - row.created_at).total_seconds()
        if age > self.config.horizon_s:
            await self._finish(row, OutboxState.failed, error=f"gave up after {age:.0f} s: {exc.reason}")
            return
        backoff = min(self.config.max_backoff_s, 2.0 ** (attempts - 1)) * (0.8 + 0.4 * random.random())
        delay = exc.after_s if exc.after_s is not None else backoff
        loop = asyncio.get_running_loop()
        if exc.scope != "key":
            # The target paused a whole installation or channel: hold every row of those buckets.
            self.pacing.hold(rules, loop.time() + delay)
        async with self.sessions.begin() as session:
            await session.execute(
                update(Outbox)
                .where(col(Outbox.id) == row.id)
                .values(
                    attempts=attempts,
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                    last_error=exc.reason[:2000],
                )
            )
            # Newer rows of the same key must not overtake the advertised wait either.
            await session.execute(
                update(Outbox)
                .where(
                    col(Outbox.channel) == row.channel,
                    col(Outbox.key) == row.key,
                    col(Outbox.state) == OutboxState.pending.value,
                    col(Outbox.id) > (row.id or 0),
                )
                .values(next_attempt_at=utcnow() + timedelta(seconds=delay))
            )

    async def _finish(self, row: Outbox, state: OutboxState, *, error: str | None = None) -> None:
        async with self.sessions.begin() as session:
            await session.execute(
                update(Outbox)
                .where(col(Outbox.id) == row.id)
                .values(
                    state=state.value,
                    attempts=row.attempts + 1,
                    sent_at=utcnow() if state is OutboxState.sent else None,
                    last_error=error[:2000] if error else row.last_error,
                )
            )
        if error:
            log.warning("outbox row %s (%s %s) %s: %s", row.id, row.channel, row.key, state.value, error)
