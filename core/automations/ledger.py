"""What automations decided, and the switch that stops them.

Every firing and every skip is an :class:`~core.models.AutomationFiring` row with its reason, and
an audit entry (``action: automation``) written in the same transaction. A firing claims the rule's
dedupe key first (a unique column): of two deliveries for one head commit — a check suite and a
workflow run, a redelivery, a schedule seen by two workers — exactly one fires.

The kill switch is a remote reference per repository (``automations:paused:owner/name``) or owner
(``automations:paused:owner/*``), set by ``/handoff pause`` and lifted by ``/handoff resume``; the
server's ``automations_paused`` setting holds patterns that are always paused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from core.automations.facts import fnmatch_any
from core.clock import utcnow
from core.db import Sessions
from core.models import AuditEntry, AutomationFiring, ExternalRef, Task, TaskSource
from core.refs import put_ref
from core.states import TERMINAL

FIRED = "fired"
SKIPPED = "skipped"
PAUSE_KEY = "automations:paused:{scope}"
# Tasks an automation drives without having created them (fix-ci follow-ups) count this long.
_DRIVEN_WINDOW = timedelta(days=2)


@dataclass(frozen=True)
class Firing:
    """One decision about one rule."""

    rule: str
    repo: str
    event: str
    decision: str
    reason: str | None = None
    source: str = "server"
    dedupe_key: str | None = None
    task_id: str | None = None
    delivery_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def row(self) -> AutomationFiring:
        """The stored row."""
        return AutomationFiring(
            rule=self.rule[:100],
            source=self.source,
            repo=self.repo[:1000],
            event=self.event[:100],
            decision=self.decision,
            reason=self.reason,
            dedupe_key=self.dedupe_key[:255] if self.dedupe_key else None,
            task_id=self.task_id,
            delivery_id=self.delivery_id,
            data=self.data,
        )

    def audit(self) -> AuditEntry:
        """The audit log's entry for it."""
        return AuditEntry(
            actor=f"automation:{self.rule}"[:255],
            action="automation",
            decision=self.decision,
            reason=self.reason,
            task_id=self.task_id,
            data={
                "rule": self.rule,
                "source": self.source,
                "repo": self.repo,
                "event": self.event,
                "delivery": self.delivery_id,
                **self.data,
            },
        )


@dataclass(frozen=True)
class Pause:
    """An active pause: which scope, who set it, when."""

    scope: str
    by: str
    at: str


class Ledger:
    """Firings, skips, rate counts and the pause switch, over the database."""

    def __init__(self, sessions: Sessions, paused_patterns: Sequence[str] = ()) -> None:
        self.sessions = sessions
        self.paused_patterns = list(paused_patterns)

    # -- decisions ------------------------------------------------------------------------------

    async def skip(self, *firings: Firing) -> None:
        """Record skips (and their audit entries) in one transaction."""
        if not firings:
            return
        async with self.sessions.begin() as session:
            await self.skip_in(session, firings)

    @staticmethod
    async def skip_in(session: AsyncSession, firings: Sequence[Firing]) -> None:
        """Record skips in ``session``'s transaction."""
        for firing in firings:
            session.add(firing.row())
            session.add(firing.audit())

    async def claim(self, firing: Firing) -> int | None:
        """Record a firing under its dedupe key; ``None`` when the key fired already."""
        try:
            async with self.sessions.begin() as session:
                row = firing.row()
                session.add(row)
                await session.flush()
                session.add(firing.audit())
                return row.id
        except IntegrityError:
            return None

    async def fired(self, firing_id: int, task_id: str, reason: str | None = None) -> None:
        """Attach the task a claimed firing started (or followed up)."""
        values: dict[str, Any] = {"task_id": task_id}
        if reason is not None:
            values["reason"] = reason
        async with self.sessions.begin() as session:
            await session.execute(
                update(AutomationFiring).where(col(AutomationFiring.id) == firing_id).values(**values)
            )

    async def release(self, firing_id: int) -> None:
        """Forget a claim whose firing failed half-way (the delivery's retry may fire again)."""
        async with self.sessions.begin() as session:
            await session.execute(delete(AutomationFiring).where(col(AutomationFiring.id) == firing_id))

    async def count_fired(self, rule: str, repo: str, since: datetime) -> int:
        """How often ``rule`` fired on ``repo`` since ``since`` (the rate limit)."""
        async with self.sessions() as session:
            found = await session.execute(
                select(func.count())
                .select_from(AutomationFiring)
                .where(
                    col(AutomationFiring.rule) == rule,
                    col(AutomationFiring.repo) == repo,
                    col(AutomationFiring.decision) == FIRED,
                    col(AutomationFiring.ts) >= since,
                )
            )
            return int(found.scalar_one())

    async def history(self, rule: str, repo: str, key_prefix: str) -> list[AutomationFiring]:
        """Fired rows of ``rule`` on ``repo`` whose dedupe key starts with ``key_prefix``, oldest first."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(AutomationFiring)
                .where(
                    col(AutomationFiring.rule) == rule,
                    col(AutomationFiring.repo) == repo,
                    col(AutomationFiring.decision) == FIRED,
                    col(AutomationFiring.dedupe_key).startswith(key_prefix, autoescape=True),
                )
                .order_by(col(AutomationFiring.id))
            )
            return list(rows.scalars())

    # -- the kill switch ------------------------------------------------------------------------

    async def paused(self, repo: str) -> Pause | None:
        """The pause that stops automations on ``repo``, if any."""
        if fnmatch_any(repo, self.paused_patterns):
            return Pause(scope=repo, by="the server's automations_paused setting", at="")
        owner = repo.partition("/")[0]
        keys = [PAUSE_KEY.format(scope=scope) for scope in (repo.lower(), f"{owner.lower()}/*")]
        async with self.sessions() as session:
            rows = await session.execute(select(ExternalRef).where(col(ExternalRef.key).in_(keys)))
            refs = {row.key: row.ref for row in rows.scalars()}
        for key in keys:  # the repository's own pause first
            ref = refs.get(key)
            if ref and ref.get("paused"):
                scope = key.removeprefix(PAUSE_KEY.format(scope=""))
                return Pause(scope=scope, by=str(ref.get("by") or "?"), at=str(ref.get("at") or ""))
        return None

    async def set_paused(self, scope: str, paused: bool, by: str) -> None:
        """Pause (or resume) ``scope`` (``owner/name`` or ``owner/*``) and audit it."""
        async with self.sessions.begin() as session:
            await put_ref(
                session,
                PAUSE_KEY.format(scope=scope.lower()),
                {"paused": paused, "by": by, "at": utcnow().isoformat()},
            )
            session.add(
                AuditEntry(
                    actor=by[:255],
                    action="automations:pause" if paused else "automations:resume",
                    decision="allowed",
                    data={"scope": scope},
                )
            )

    async def active_tasks(self, scope: str) -> list[Task]:
        """Tasks automations drive on ``scope`` that have not ended: the ones they created, and
        the ones a fix-ci rule followed up on lately."""
        since = utcnow() - _DRIVEN_WINDOW
        async with self.sessions() as session:
            driven = select(col(AutomationFiring.task_id)).where(
                col(AutomationFiring.decision) == FIRED,
                col(AutomationFiring.task_id).is_not(None),
                col(AutomationFiring.ts) >= since,
            )
            rows = await session.execute(
                select(Task).where(
                    col(Task.state).not_in([s.value for s in TERMINAL]),
                    (col(Task.source) == TaskSource.github_automation.value) | col(Task.id).in_(driven),
                )
            )
            return [t for t in rows.scalars() if fnmatch_any(t.repo, [scope])]
