"""Scheduled rules: arq cron jobs (unique across workers) that fire ``work`` tasks on repositories.

Each rule with a ``schedule`` becomes one :class:`~core.ports.Schedule`. When it fires, every
repository it names gets a task like any other (its draft pull request opens against the default
branch, its check run is on the default branch's head), recorded in the ledger with the rule. The
dedupe key holds the scheduled time from arq's job id — the same on every worker — so even a
firing two workers both ran would start each task once.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from core.automations.cron import parse_cron
from core.automations.facts import EventFacts
from core.automations.rules import Rule
from core.clock import utcnow
from core.ports import Schedule
from github_app.automations.decision import Decision, EventContext
from github_app.automations.engine import Automations
from github_app.errors import GitHubError

log = logging.getLogger(__name__)
EVENT = "schedule"


def scheduled_at(ctx: dict[str, Any]) -> datetime:
    """The time a cron firing was scheduled for (arq's unique job id ends in it, in ms)."""
    job_id = str(ctx.get("job_id") or "")
    tail = job_id.rpartition(":")[2]
    if tail.isdigit():
        return datetime.fromtimestamp(int(tail) / 1000, tz=UTC).replace(microsecond=0)
    return utcnow().replace(microsecond=0)


class Scheduler:
    """Fires the scheduled rules of one engine."""

    def __init__(self, engine: Automations) -> None:
        self.engine = engine

    def schedules(self) -> list[Schedule]:
        """One cron job per scheduled rule."""
        found = []
        for rule in self.engine.rules:
            if rule.schedule is None or not rule.enabled:
                continue

            async def job(ctx: dict[str, Any], rule: Rule = rule) -> str:
                return await self.fire(rule, scheduled_at(ctx))

            found.append(Schedule(name=rule.name, fields=parse_cron(rule.schedule), job=job))
        return found

    async def fire(self, rule: Rule, at: datetime) -> str:
        """Fire ``rule`` for its time ``at`` on each of its repositories; the outcomes."""
        outcomes = [f"{repo}: {await self._one(rule, repo, at)}" for repo in rule.repos]
        log.info("schedule %s at %s: %s", rule.name, at.isoformat(), "; ".join(outcomes))
        return "; ".join(outcomes)

    async def _one(self, rule: Rule, repo: str, at: datetime) -> str:
        engine = self.engine
        stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        facts = EventFacts(event=EVENT, repo=repo, extra={"date": stamp})
        try:
            installation = await engine.api.installation(repo)
            if installation is None:
                await engine.skip(rule, "server", facts, f"the App is not installed on {repo}")
                return "skipped (not installed)"
            info = await engine.api.repository(installation, repo)
        except GitHubError as exc:
            await engine.skip(rule, "server", facts, f"GitHub: {exc}")
            return f"skipped ({exc})"
        branch = str(info.get("default_branch") or "main")
        facts = EventFacts(
            event=EVENT,
            repo=repo,
            installation_id=installation,
            default_branch=branch,
            head_ref=branch,
            url=str(info.get("html_url") or ""),
            extra={"date": stamp},
        )
        pause = await engine.ledger.paused(repo)
        if pause is not None:
            reason = f"automations are paused on {pause.scope} (by {pause.by})"
            await engine.skip(rule, "server", facts, reason)
            return f"skipped ({reason})"
        ctx = EventContext(facts, engine.svc, engine.api)
        decision = Decision(rule, "server", f"{rule.name}:{repo}:{stamp}")
        return await engine.firer.claim_and(decision, ctx, engine.firer.start_work, scheduled=stamp)
