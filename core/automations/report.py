"""What automations did, for people: per rule and repository, the last firing, counts and cost;
and the recent decisions. Read by ``handoff automations list`` and the dashboard's Automations page.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlmodel import col

from core.automations.ledger import FIRED, SKIPPED
from core.db import Sessions
from core.models import AutomationFiring, Run


@dataclass(frozen=True)
class RuleStats:
    """One rule on one repository."""

    rule: str
    source: str
    repo: str
    fired: int
    skipped: int
    last_at: datetime
    last_decision: str
    last_reason: str | None
    last_task: str | None
    cost_usd: float


async def rule_stats(sessions: Sessions, repos: Collection[str] | None = None) -> list[RuleStats]:
    """Every (rule, source, repository) that decided something, newest activity first."""
    async with sessions() as session:
        grouped = select(
            col(AutomationFiring.rule),
            col(AutomationFiring.source),
            col(AutomationFiring.repo),
            func.sum(case((col(AutomationFiring.decision) == FIRED, 1), else_=0)),
            func.sum(case((col(AutomationFiring.decision) == SKIPPED, 1), else_=0)),
            func.max(col(AutomationFiring.id)),
        ).group_by(col(AutomationFiring.rule), col(AutomationFiring.source), col(AutomationFiring.repo))
        if repos is not None:
            grouped = grouped.where(col(AutomationFiring.repo).in_(sorted(repos)))
        rows = (await session.execute(grouped)).all()
        last_ids = [int(r[5]) for r in rows]
        last = {
            f.id: f
            for f in (
                await session.execute(select(AutomationFiring).where(col(AutomationFiring.id).in_(last_ids)))
            ).scalars()
        }
        costs = await session.execute(
            select(col(AutomationFiring.rule), col(AutomationFiring.repo), func.sum(col(Run.cost_usd)))
            .join(Run, col(Run.task_id) == col(AutomationFiring.task_id))
            .where(col(AutomationFiring.decision) == FIRED)
            .group_by(col(AutomationFiring.rule), col(AutomationFiring.repo))
        )
        cost = {(r, repo): float(total or 0.0) for r, repo, total in costs.all()}
    stats = []
    for rule, source, repo, fired, skipped, last_id in rows:
        latest = last[int(last_id)]
        stats.append(
            RuleStats(
                rule=rule,
                source=source,
                repo=repo,
                fired=int(fired or 0),
                skipped=int(skipped or 0),
                last_at=latest.ts,
                last_decision=latest.decision,
                last_reason=latest.reason,
                last_task=latest.task_id,
                cost_usd=cost.get((rule, repo), 0.0),
            )
        )
    return sorted(stats, key=lambda s: s.last_at, reverse=True)


async def recent(
    sessions: Sessions,
    *,
    repos: Collection[str] | None = None,
    rule: str | None = None,
    decision: str | None = None,
    limit: int = 100,
) -> list[AutomationFiring]:
    """The newest decisions (firings and skips), filtered."""
    query = select(AutomationFiring).order_by(col(AutomationFiring.id).desc()).limit(limit)
    if repos is not None:
        query = query.where(col(AutomationFiring.repo).in_(sorted(repos)))
    if rule:
        query = query.where(col(AutomationFiring.rule) == rule)
    if decision:
        query = query.where(col(AutomationFiring.decision) == decision)
    async with sessions() as session:
        return list((await session.execute(query)).scalars())
