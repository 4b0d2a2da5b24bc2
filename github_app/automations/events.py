"""Lenient models of the events automations listen to, and their :class:`EventFacts`.

Same rules as :mod:`github_app.events`: unknown keys ignored, defaults everywhere, so GitHub adding
or dropping a field never breaks a delivery. Only the fields modelled here travel from the webhook
request to the job.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.automations.facts import EventFacts
from github_app.events import App, Envelope, Label, PullRequest, RepoRef, User


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PullRequestFull(PullRequest):
    """A pull request with what rules filter on."""

    draft: bool = False
    labels: list[Label] = Field(default_factory=list)


class PullRequestActivity(Envelope):
    """``pull_request``: opened, reopened, synchronize, ready_for_review, labeled."""

    pull_request: PullRequestFull
    label: Label | None = None


class Side(_Lenient):
    """One side of a pull request as CI events list it."""

    ref: str = ""
    sha: str = ""
    repo: RepoRef | None = None


class LinkedPull(_Lenient):
    """A pull request named by a check suite or workflow run (empty for forks' pull requests)."""

    number: int
    head: Side = Field(default_factory=Side)
    base: Side = Field(default_factory=Side)


class CheckSuite(_Lenient):
    """A completed check suite."""

    id: int
    head_branch: str | None = None
    head_sha: str = ""
    conclusion: str | None = None
    pull_requests: list[LinkedPull] = Field(default_factory=list)
    app: App | None = None


class CheckSuiteEvent(Envelope):
    """``check_suite``: completed."""

    check_suite: CheckSuite


class WorkflowRun(_Lenient):
    """A completed GitHub Actions workflow run."""

    id: int
    name: str | None = None
    head_branch: str | None = None
    head_sha: str = ""
    conclusion: str | None = None
    pull_requests: list[LinkedPull] = Field(default_factory=list)
    head_repository: RepoRef | None = None
    check_suite_id: int | None = None
    html_url: str = ""


class WorkflowRunEvent(Envelope):
    """``workflow_run``: completed."""

    workflow_run: WorkflowRun


class PushEvent(Envelope):
    """``push`` (no action)."""

    ref: str = ""
    after: str = ""
    deleted: bool = False
    pusher: User | None = None


class OpenedIssue(_Lenient):
    """An issue as ``issues.opened`` sends it."""

    number: int
    title: str = ""
    body: str | None = None
    user: User = Field(default_factory=User)
    html_url: str = ""
    labels: list[Label] = Field(default_factory=list)


class IssueOpenedEvent(Envelope):
    """``issues``: opened."""

    issue: OpenedIssue


def _facts(ev: Envelope, event: str, delivery_id: str, **fields: Any) -> EventFacts:
    assert ev.repository is not None
    return EventFacts(
        event=event,
        repo=ev.repository.full_name,
        # The webhook never routes a payload without one; a recorded one may lack it (a dry run).
        installation_id=ev.installation.id if ev.installation is not None else 0,
        delivery_id=delivery_id,
        sender=ev.sender.login,
        sender_is_bot=ev.sender.is_bot,
        default_branch=ev.repository.default_branch,
        **fields,
    )


def pull_request_facts(ev: PullRequestActivity, delivery_id: str) -> EventFacts:
    """Facts of a pull request event."""
    pr = ev.pull_request
    repo = ev.repository.full_name if ev.repository else ""
    head_repo = pr.head.repo.full_name if pr.head.repo else ""
    return _facts(
        ev,
        f"pull_request.{ev.action}",
        delivery_id,
        url=pr.html_url,
        number=pr.number,
        is_pr=True,
        title=pr.title,
        body=pr.body or "",
        author=pr.user.login,
        draft=pr.draft,
        labels=tuple(label.name for label in pr.labels),
        head_sha=pr.head.sha,
        head_ref=pr.head.ref,
        base_ref=pr.base.ref,
        # A head repository GitHub no longer knows (a deleted fork) is someone else's too.
        fork=not head_repo or head_repo.lower() != repo.lower(),
        head_repo=head_repo,
    )


def _ci_pull(pulls: list[LinkedPull], head_sha: str) -> LinkedPull | None:
    """The one pull request a CI result is about (GitHub lists none for forks' pull requests)."""
    matching = [p for p in pulls if not p.head.sha or p.head.sha == head_sha]
    return matching[0] if len(matching) == 1 else None


def check_suite_facts(ev: CheckSuiteEvent, delivery_id: str) -> EventFacts:
    """Facts of a completed check suite."""
    suite = ev.check_suite
    pull = _ci_pull(suite.pull_requests, suite.head_sha)
    return _facts(
        ev,
        f"check_suite.{ev.action}",
        delivery_id,
        number=pull.number if pull else None,
        is_pr=pull is not None,
        head_sha=suite.head_sha,
        head_ref=suite.head_branch or (pull.head.ref if pull else ""),
        base_ref=pull.base.ref if pull else "",
        conclusion=suite.conclusion,
        suite_app_id=suite.app.id if suite.app else None,
        check_suite_id=suite.id,
        workflow=(suite.app.slug or "") if suite.app else "",
    )


def workflow_run_facts(ev: WorkflowRunEvent, delivery_id: str) -> EventFacts:
    """Facts of a completed workflow run."""
    run = ev.workflow_run
    pull = _ci_pull(run.pull_requests, run.head_sha)
    repo = ev.repository.full_name if ev.repository else ""
    head_repo = run.head_repository.full_name if run.head_repository else repo
    return _facts(
        ev,
        f"workflow_run.{ev.action}",
        delivery_id,
        url=run.html_url,
        number=pull.number if pull else None,
        is_pr=pull is not None,
        head_sha=run.head_sha,
        head_ref=run.head_branch or (pull.head.ref if pull else ""),
        base_ref=pull.base.ref if pull else "",
        fork=bool(head_repo) and head_repo.lower() != repo.lower(),
        head_repo=head_repo,
        conclusion=run.conclusion,
        workflow_run_id=run.id,
        check_suite_id=run.check_suite_id,
        workflow=run.name or "",
    )


def push_facts(ev: PushEvent, delivery_id: str) -> EventFacts:
    """Facts of a push (branches only; tags and deletions push nothing to work on)."""
    return _facts(
        ev,
        "push",
        delivery_id,
        head_sha=ev.after if not ev.deleted else "",
        head_ref=ev.ref.removeprefix("refs/heads/") if ev.ref.startswith("refs/heads/") else "",
    )


def issue_facts(ev: IssueOpenedEvent, delivery_id: str) -> EventFacts:
    """Facts of an opened issue."""
    issue = ev.issue
    return _facts(
        ev,
        f"issues.{ev.action}",
        delivery_id,
        url=issue.html_url,
        number=issue.number,
        title=issue.title,
        body=issue.body or "",
        author=issue.user.login,
        labels=tuple(label.name for label in issue.labels),
    )


# event name -> (payload model, its facts); the handlers and ``handoff automations test`` share it.
FACTS: dict[str, tuple[type[Envelope], Any]] = {
    "pull_request": (PullRequestActivity, pull_request_facts),
    "check_suite": (CheckSuiteEvent, check_suite_facts),
    "workflow_run": (WorkflowRunEvent, workflow_run_facts),
    "push": (PushEvent, push_facts),
    "issues": (IssueOpenedEvent, issue_facts),
}


def facts_of(event: str, payload: Any, delivery_id: str = "") -> EventFacts | None:
    """The facts of a recorded payload of ``event``, or ``None`` when automations do not read it."""
    known = FACTS.get(event)
    if known is None or not isinstance(payload, dict):
        return None
    model, to_facts = known
    try:
        parsed = model.model_validate(payload)
    except ValidationError:
        return None
    if parsed.repository is None or "/" not in parsed.repository.full_name:
        return None
    facts: EventFacts = to_facts(parsed, delivery_id)
    return facts
