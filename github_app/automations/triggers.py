"""The GitHub events automations listen to, registered in the one event registry.

Each handler only turns its payload into :class:`~core.automations.facts.EventFacts` and hands it
to the engine (``ingress.svc.automations``). Handoff's own check suites are dropped at the webhook
(every task completes one); everything else reaches the engine, which records why a rule did not
fire — the App's own pushes included.
"""

from __future__ import annotations

from typing import Any

from core.automations.facts import EventFacts
from github_app.automations.events import (
    CheckSuiteEvent,
    IssueOpenedEvent,
    PullRequestActivity,
    PushEvent,
    WorkflowRunEvent,
    check_suite_facts,
    issue_facts,
    pull_request_facts,
    push_facts,
    workflow_run_facts,
)
from github_app.routing import EventRegistry, Screening

PULL_REQUEST_ACTIONS = ("opened", "reopened", "synchronize", "ready_for_review", "labeled")


def _own_suite(ev: CheckSuiteEvent, s: Screening) -> str | None:
    app = ev.check_suite.app
    return "Handoff's own check suite" if app is not None and s.app_id and app.id == s.app_id else None


async def _handle(ix: Any, facts: EventFacts) -> str:
    engine = ix.svc.automations
    if engine is None:
        return "ignored: automations are not set up"
    outcome: str = await engine.handle(facts)
    return outcome


def register(events: EventRegistry) -> None:
    """Add the automation events to ``events``."""

    @events.on("pull_request", *PULL_REQUEST_ACTIONS, model=PullRequestActivity)
    async def pull_request(ev: PullRequestActivity, ix: Any) -> str:
        return await _handle(ix, pull_request_facts(ev, ix.delivery_id))

    @events.on("check_suite", "completed", model=CheckSuiteEvent, screen=_own_suite)
    async def check_suite(ev: CheckSuiteEvent, ix: Any) -> str:
        return await _handle(ix, check_suite_facts(ev, ix.delivery_id))

    @events.on("workflow_run", "completed", model=WorkflowRunEvent)
    async def workflow_run(ev: WorkflowRunEvent, ix: Any) -> str:
        return await _handle(ix, workflow_run_facts(ev, ix.delivery_id))

    # A push has no action: it routes as ("push", "").
    @events.on("push", "", model=PushEvent)
    async def push(ev: PushEvent, ix: Any) -> str:
        facts = push_facts(ev, ix.delivery_id)
        if not facts.head_ref or not facts.head_sha:
            return "ignored: a tag or a deleted branch"
        return await _handle(ix, facts)

    @events.on("issues", "opened", model=IssueOpenedEvent)
    async def issue_opened(ev: IssueOpenedEvent, ix: Any) -> str:
        return await _handle(ix, issue_facts(ev, ix.delivery_id))
