"""The automation engine: which rules fire on a GitHub event, and what firing does.

For each rule listening to the event — the server's rules covering the repository, then the
repository's own from its default-branch ``.handoff.yml`` (refused ones are reported on the commit
as a neutral "Handoff automations" check run) — in order: the payload filters and loop safety
(:func:`~core.automations.facts.static_skip`), the kill switch, the filters that need GitHub (the
author's role, the changed files), forks, the rate limit, the dedupe key. A rule that passes fires
(:mod:`github_app.automations.firing`); every decision is a ledger row and an audit entry.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from core.automations.facts import EventFacts, dynamic_skip, static_skip
from core.automations.ledger import FIRED, SKIPPED, Firing, Ledger
from core.automations.rules import RepoBounds, Rule, parse_repo_rules
from core.automations.template import render
from core.clock import utcnow
from core.models import Outbox
from core.outbox import OutboxMessage, outbox_rows, write_messages
from core.sql import insert_ignore
from github_app.automations.api import AutomationAPI
from github_app.automations.ci import fix_ci
from github_app.automations.decision import Decision, EventContext
from github_app.automations.firing import Firer
from github_app.operations import CompletedCheck
from github_app.repo_config import AUTOMATIONS, GitHubServerConfig
from github_app.services import GitHubServices

log = logging.getLogger(__name__)
CONFIG_CHECK = "Handoff automations"


def repo_bounds(server: GitHubServerConfig, profiles: Collection[str], rules: list[Rule]) -> RepoBounds:
    """What a repository's own rules may do on this server (``github:`` of handoff.yml)."""
    return RepoBounds(
        allowed=AUTOMATIONS in server.allowed_overrides,
        agents=[p for p in profiles if server.agents is None or p in server.agents],
        models=server.models,
        max_budget=server.max_budget.model_dump(),
        reserved=frozenset(r.name for r in rules),
    )


def dedupe_key(rule: Rule, facts: EventFacts) -> str:
    """The rule's dedupe key for ``facts``: its template, else rule + repository + head commit
    (or issue, or delivery)."""
    if rule.dedupe:
        return f"{rule.name}:{render(rule.dedupe, facts.values(rule.name)).plain}"
    if facts.head_sha:
        return f"{rule.name}:{facts.repo}:{facts.head_sha}"
    if facts.number is not None:
        return f"{rule.name}:{facts.repo}#{facts.number}"
    return f"{rule.name}:{facts.repo}:{facts.delivery_id}"


class Automations:
    """Runs automation rules for GitHub events (built once per process)."""

    def __init__(self, svc: GitHubServices, api: AutomationAPI, rules: list[Rule], ledger: Ledger) -> None:
        self.svc = svc
        self.api = api
        self.rules = rules
        self.ledger = ledger
        self.firer = Firer(self)

    def bounds(self) -> RepoBounds:
        """What a repository's own rules may do on this server."""
        return repo_bounds(self.svc.server, self.svc.repo_configs.profiles, self.rules)

    async def rules_for(self, facts: EventFacts) -> list[tuple[Rule, str]]:
        """The server's rules for the repository, then the repository's own (refusals reported)."""
        found = [(r, "server") for r in self.rules if r.applies_to(facts.repo)]
        # Read even when the server allows no repository rules: an owner who wrote some is told
        # why nothing happens (the read is cached per repository).
        config = await self.svc.repo_configs.load(facts.installation_id, facts.repo, facts.default_branch)
        repo_rules = parse_repo_rules(config.automations, self.bounds())
        if repo_rules.refused:
            await self._report_refusals(facts, repo_rules.refused)
        return found + [(r, "repo") for r in repo_rules.rules]

    async def handle(self, facts: EventFacts) -> str:
        """Decide every rule listening to ``facts.event``; return the delivery's outcome."""
        listening = [(r, s) for r, s in await self.rules_for(facts) if facts.event in r.events]
        if not listening:
            return f"ignored: no automation rule listens to {facts.event}"
        ctx = EventContext(facts, self.svc, self.api)
        outcomes = [f"{rule.name}: {await self.consider(rule, source, ctx)}" for rule, source in listening]
        # One transaction for every skip (a delivery that fails before this is retried and decides
        # again, so nothing is recorded twice).
        await self.ledger.skip(*ctx.pending)
        return "; ".join(outcomes)

    async def on_demand(self, rule: Rule, facts: EventFacts, key: str) -> str:
        """Fire ``rule`` because a writer asked (``/handoff review``): no filters, same firing."""
        ctx = EventContext(facts, self.svc, self.api)
        return await self.firer.claim_and(Decision(rule, "command", key), ctx, self.firer.start_review)

    async def consider(self, rule: Rule, source: str, ctx: EventContext) -> str:
        """Fire ``rule`` on the event or record why not; a short outcome either way."""
        facts = ctx.facts
        reason = await self.skip_reason(rule, ctx)
        if reason is not None:
            await self.skip(rule, source, facts, reason, ctx=ctx)
            return f"skipped ({reason})"
        decision = Decision(rule, source, self.dedupe_key(rule, facts))
        if rule.do == "fix-ci":
            return await fix_ci(self.firer, decision, ctx)
        return await self.firer.fire(decision, ctx)

    async def skip_reason(self, rule: Rule, ctx: EventContext) -> str | None:
        """Why ``rule`` must not fire on this event, or ``None`` (cheapest checks first)."""
        facts = ctx.facts
        reason = static_skip(rule, facts, self.svc.bot_login, self.svc.app_id)
        if reason is not None:
            return reason
        pause = await ctx.paused(self.ledger)
        if pause is not None:
            return f"automations are paused on {pause.scope} (by {pause.by})"
        reason = await dynamic_skip(rule, facts, ctx)
        if reason is not None:
            return reason
        if facts.fork and rule.do != "review" and not self.svc.server.fork_pull_requests:
            return (
                "the pull request comes from a fork: working on it would push its commits here "
                "(github.fork_pull_requests is off)"
            )
        hour_ago = utcnow() - timedelta(hours=1)
        fired = await self.ledger.count_fired(rule.name, facts.repo, hour_ago)
        if fired >= rule.rate_limit.per_hour:
            return f"rate limit: fired {fired} times on {facts.repo} in the last hour"
        return None

    def dedupe_key(self, rule: Rule, facts: EventFacts) -> str:
        """The rule's dedupe key for ``facts``."""
        return dedupe_key(rule, facts)

    async def skip(
        self,
        rule: Rule,
        source: str,
        facts: EventFacts,
        reason: str,
        *,
        ctx: EventContext | None = None,
        **data: Any,
    ) -> None:
        """Record a skip with its reason (with the event's other skips, when ``ctx`` is given)."""
        firing = self.firing(rule, source, facts, SKIPPED, reason, data=data)
        if ctx is not None:
            ctx.pending.append(firing)
        else:
            await self.ledger.skip(firing)

    def firing(
        self,
        rule: Rule,
        source: str,
        facts: EventFacts,
        decision: str = FIRED,
        reason: str | None = None,
        key: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Firing:
        """The ledger row of a decision about ``rule`` on ``facts``."""
        where = {"number": facts.number, "head_sha": facts.head_sha} if facts.number or facts.head_sha else {}
        return Firing(
            rule=rule.name,
            repo=facts.repo,
            event=facts.event,
            decision=decision,
            reason=reason,
            source=source,
            dedupe_key=key,
            delivery_id=facts.delivery_id or None,
            data={**where, **(data or {})},
        )

    async def send(self, messages: list[OutboxMessage], task_id: str | None = None) -> None:
        """Write outbox rows (their idempotency keys make a replayed delivery write nothing)."""
        async with self.svc.sessions.begin() as session:
            await write_messages(session, messages, task_id, skip_duplicates=True)

    async def _report_refusals(self, facts: EventFacts, refused: list[tuple[str, str]]) -> None:
        """A neutral check run on the commit listing the refused rules, once per commit and text."""
        sha = facts.head_sha or await self.svc.api.branch_sha(
            facts.installation_id, facts.repo, facts.default_branch
        )
        lines = [f"- `{name}`: {reason}" if name != "*" else f"- {reason}" for name, reason in refused]
        summary = (
            f"The `automations` of `.handoff.yml` on `{facts.default_branch}` were read, and this "
            "server refused some of them:\n\n" + "\n".join(lines)
        )
        digest = hashlib.sha256(summary.encode()).hexdigest()[:12]
        skips = [
            Firing(
                rule=name if name != "*" else "(repository rules)",
                repo=facts.repo,
                event=facts.event,
                decision=SKIPPED,
                reason=f"refused: {reason}",
                source="repo",
                delivery_id=facts.delivery_id or None,
            )
            for name, reason in refused
        ]
        if not sha:
            await self.ledger.skip(*skips)
            return
        check = CompletedCheck(
            installation_id=facts.installation_id,
            repo=facts.repo,
            head_sha=sha,
            name=CONFIG_CHECK,
            title=f"{len(refused)} automation rule(s) refused",
            summary=summary,
        )
        key = f"github:automations:config:{facts.repo}:{sha}:{digest}"
        message = OutboxMessage(key, "append", check, idempotency_key=key)
        # Reported (and recorded) once per commit and text, not at every event on that commit.
        async with self.svc.sessions.begin() as session:
            if await insert_ignore(session, Outbox, outbox_rows([message], None), ["idempotency_key"]):
                await self.ledger.skip_in(session, skips)
