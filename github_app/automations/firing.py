"""What a rule does when it fires: a review task, a work task, or a fix for failed CI.

Every firing first claims the rule's dedupe key in the ledger (a second delivery for the same
head commit fires nothing) and gives the claim back if it fails half-way, so the delivery's retry
can fire again. Tasks carry :class:`~core.links.AutomationLinks` (rule, mode, event) and a target of
their own per rule and pull request: a newer push cancels the rule's older review of it.

Text from the event (titles, bodies, branch names, the diff, CI logs) reaches the agent fenced as
untrusted data; the rule's own instructions are the server's or the default branch's, and are not.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlmodel import col

from core.automations.facts import EventFacts
from core.automations.template import fence, render
from core.errors import InvalidTransition
from core.links import AutomationLinks, GitHubLinks, PullRequestInfo, RepoSettings, TaskLinks
from core.models import Task, TaskSource
from core.review_records import ReviewRecords
from core.states import TERMINAL
from core.tasks import NewTask
from github_app.automations.decision import Decision, Engine, EventContext
from github_app.automations.diff import diff_map, diff_text
from github_app.repo_config import RepoConfig

log = logging.getLogger(__name__)
Act = Callable[[Decision, EventContext], Awaitable[str]]

REVIEW_HOWTO = """\
How to review: read the diff below and the code around it — /workspace is the pull request's head \
({sha}). Report each real problem as a finding: `path`, `line` on the head commit (`start_line` \
too for a range), `severity` (error, warning or info), `body`, and optionally `suggestion` (the \
replacement text for those lines). The built-in agent calls `report_findings`; other agents print \
{{"type": "result", "data": {{"summary": "...", "findings": [...]}}}} as their last line. Do not \
change files: nothing you change is pushed."""


def _budget(config: RepoConfig, rule_budget: dict[str, float | int]) -> dict[str, float | int]:
    """The repository's budget tightened by the rule's (each value the smaller one)."""
    merged: dict[str, float | int] = {
        k: v for k, v in config.budget.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for key, value in rule_budget.items():
        merged[key] = min(merged[key], value) if key in merged else value
    return merged


class Firer:
    """Carries out decisions of one engine (:class:`github_app.automations.engine.Automations`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.svc = engine.svc
        self.reviews = ReviewRecords(engine.svc.sessions)

    async def fire(self, decision: Decision, ctx: EventContext) -> str:
        """Fire ``decision`` once (by its dedupe key); a short outcome. (``fix-ci`` decisions go to
        :func:`github_app.automations.ci.fix_ci`, which uses this firer.)"""
        return await self.claim_and(decision, ctx, self._start)

    async def claim_and(self, decision: Decision, ctx: EventContext, act: Act, **data: object) -> str:
        """Claim the dedupe key, then ``act(decision, ctx)`` -> task id; record either outcome."""
        engine, facts = self.engine, ctx.facts
        firing = engine.firing(decision.rule, decision.source, facts, key=decision.key, data=dict(data))
        claimed = await engine.ledger.claim(firing)
        if claimed is None:
            reason = f"already fired for {decision.key}"
            await engine.skip(decision.rule, decision.source, facts, reason, ctx=ctx)
            return f"skipped ({reason})"
        try:
            task_id = await act(decision, ctx)
        except BaseException:
            await engine.ledger.release(claimed)
            raise
        await engine.ledger.fired(claimed, task_id)
        return f"fired ({task_id})"

    async def _start(self, decision: Decision, ctx: EventContext) -> str:
        if decision.rule.do == "review":
            return await self.start_review(decision, ctx)
        return await self.start_work(decision, ctx)

    # -- tasks ----------------------------------------------------------------------------------

    def target_key(self, decision: Decision, facts: EventFacts) -> str:
        """One active task per rule and pull request (or issue, or repository)."""
        if facts.number is not None:
            return f"github:{facts.repo}#{facts.number}:automation:{decision.rule.name}"
        return f"automation:{decision.rule.name}:{facts.repo}"

    async def create(
        self,
        decision: Decision,
        ctx: EventContext,
        instructions: str,
        *,
        base: str | None,
        mode: str,
        target_key: str,
    ) -> Task:
        """Create (and queue) the task a firing starts."""
        facts, svc, rule = ctx.facts, self.svc, decision.rule
        config = await svc.repo_configs.load(facts.installation_id, facts.repo, facts.default_branch)
        head_sha = facts.head_sha or await svc.api.branch_sha(
            facts.installation_id, facts.repo, facts.default_branch
        )
        pr = (
            PullRequestInfo(
                head_sha=facts.head_sha,
                head_ref=facts.head_ref,
                base_ref=facts.base_ref,
                fork=facts.fork,
                head_repo=facts.head_repo,
            )
            if facts.is_pr
            else None
        )
        github = GitHubLinks(
            installation_id=facts.installation_id,
            repo=facts.repo,
            number=facts.number,
            is_pr=facts.is_pr,
            default_branch=facts.default_branch,
            head_sha=head_sha,
            trigger="automation",
            pr=pr,
            config=RepoSettings.model_validate(
                config.model_dump(exclude={"notes", "trigger_label", "automations"}, exclude_none=True)
            ),
            config_notes=config.notes,
        )
        automation = AutomationLinks(
            rule=rule.name,
            source=decision.source,
            mode=mode,
            event=facts.event,
            head_sha=facts.head_sha or None,
            delivery=facts.delivery_id or None,
        )
        model = rule.model or config.model
        links = TaskLinks(
            clone_url=svc.clone_url(facts.repo),
            url=facts.url or None,
            github=github,
            automation=automation,
            options={"model": model} if model else {},
        )
        task, _created = await svc.tasks.create(
            NewTask(
                repo=facts.repo,
                instructions=instructions,
                source=TaskSource.github_automation,
                agent=rule.agent or config.agent,
                base_ref=base,
                requester=f"automation:{rule.name}",
                dedupe_key=f"automation:{decision.key}"[:255],
                target_key=target_key,
                links=links,
                budget=_budget(config, rule.budget.model_dump(exclude_none=True)),
            )
        )
        return task

    def base_for(self, facts: EventFacts) -> str | None:
        """Where a work task starts: the pull request's head (a fork's as ``refs/pull/N/head``),
        the pushed or CI's branch, else the default branch."""
        if facts.is_pr and facts.number is not None:
            return f"refs/pull/{facts.number}/head" if facts.fork else facts.head_ref or None
        return facts.head_ref or None

    async def start_work(self, decision: Decision, ctx: EventContext, extra: str = "") -> str:
        """A ``work`` task: the rule's instructions (event fields fenced), then ``extra``."""
        facts = ctx.facts
        text = render(decision.rule.instructions_template(), facts.values(decision.rule.name)).text
        task = await self.create(
            decision,
            ctx,
            text + (f"\n\n{extra}" if extra else ""),
            base=self.base_for(facts),
            mode=decision.rule.do,
            target_key=self.target_key(decision, facts),
        )
        return task.id

    async def start_review(self, decision: Decision, ctx: EventContext) -> str:
        """A review task on the pull request's head, after cancelling the rule's older review of it."""
        facts = ctx.facts
        assert facts.number is not None
        target = self.target_key(decision, facts)
        await self.cancel_active(target, f"superseded by a review of {facts.head_sha[:7]}")
        files = await ctx.files()
        rendered = render(decision.rule.instructions_template(), facts.values(decision.rule.name)).text
        instructions = "\n\n".join(
            [
                rendered,
                REVIEW_HOWTO.format(sha=facts.head_sha),
                "# The diff\n\n" + fence(diff_text(files), "pull request diff"),
            ]
        )
        task = await self.create(
            decision, ctx, instructions, base=self.base_for(facts), mode="review", target_key=target
        )
        await self.reviews.start(
            task.id, facts.repo, facts.number, decision.rule.name, facts.head_sha, diff_map(files)
        )
        return task.id

    async def cancel_active(self, target_key: str, why: str) -> list[str]:
        """Cancel the tasks on ``target_key`` that have not ended (an older push's review)."""
        async with self.svc.sessions() as session:
            rows = await session.execute(
                select(Task).where(
                    col(Task.target_key) == target_key,
                    col(Task.state).not_in([s.value for s in TERMINAL]),
                )
            )
            active = list(rows.scalars())
        done: list[str] = []
        for task in active:
            try:
                await self.svc.tasks.cancel(task.id, actor="automation")
            except InvalidTransition:  # it ended meanwhile: nothing to cancel
                continue
            await self.svc.tasks.audit("automation", "cancel", "allowed", reason=why, task_id=task.id)
            done.append(task.id)
        return done
