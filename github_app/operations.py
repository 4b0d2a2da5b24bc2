"""What a ``github`` outbox row asks for: one discriminated union, shared by writers and the notifier.

Writers — the reporter (check run, tracking comment) and the ingress (👀, replies) — build these;
:class:`~github_app.delivery.GitHubNotifier` reads them back with :data:`OPERATIONS`. A new kind of
write (a pull-request review, check-run annotations) is a new member of :data:`GitHubOperation`
and a branch in the notifier, nothing else.

``tracking`` and ``check`` carry routing data only: the notifier renders the task from the
database when it sends, so what GitHub shows is never older than the row that caused it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from core.outbox import Operation, Operations

CHANNEL = "github"


class _GitHubOperation(Operation):
    """A write to one repository of one installation (writes are paced per installation)."""

    CHANNEL: ClassVar[str] = CHANNEL

    installation_id: int
    repo: str


class Reaction(_GitHubOperation):
    """A reaction (👀) on the comment that asked, or on the issue itself."""

    op: Literal["reaction"] = "reaction"
    number: int
    comment_id: int | None = None
    # "issue" (conversation comment), "review" (line comment) or "issue_itself".
    comment_kind: str = "issue_itself"
    content: str = "eyes"


class Comment(_GitHubOperation):
    """A conversation comment answering someone, created once (found by its marker on a retry)."""

    op: Literal["comment"] = "comment"
    number: int
    body: str


class Tracking(_GitHubOperation):
    """Bring the task's tracking comment up to date (rendered at send time)."""

    op: Literal["tracking"] = "tracking"
    task_id: str
    number: int | None = None
    seq: int = 0


class Check(_GitHubOperation):
    """Bring the task's check run on ``head_sha`` up to date (rendered at send time)."""

    op: Literal["check"] = "check"
    task_id: str
    number: int | None = None
    seq: int = 0
    head_sha: str


class CompletedCheck(_GitHubOperation):
    """A check run created once, already completed (e.g. automation rules a repository's
    ``.handoff.yml`` asked for and the server refused, on the commit where they were read)."""

    op: Literal["completed_check"] = "completed_check"
    head_sha: str
    name: str
    conclusion: Literal["neutral", "success", "failure", "action_required"] = "neutral"
    title: str
    summary: str


class ReviewCheck(_GitHubOperation):
    """Bring a review task's "Handoff review" check run up to date, annotations included (rendered
    from the task and its review at send time; annotations go 50 per request)."""

    op: Literal["review_check"] = "review_check"
    task_id: str
    head_sha: str
    seq: int = 0


class ReviewSummary(_GitHubOperation):
    """Bring the one review summary comment of a pull request and rule up to date (edited in
    place across pushes; rendered from the newest review at send time)."""

    op: Literal["review_summary"] = "review_summary"
    task_id: str
    number: int
    rule: str
    seq: int = 0


class ReviewPost(_GitHubOperation):
    """Post a review run's findings: one pull request review with inline comments on the diff
    (only findings not already open as Handoff's threads), and resolve Handoff's earlier threads
    whose findings are gone."""

    op: Literal["review_post"] = "review_post"
    task_id: str
    run_id: str
    number: int
    rule: str


AnyGitHubOperation = (
    Reaction | Comment | Tracking | Check | CompletedCheck | ReviewCheck | ReviewSummary | ReviewPost
)
GitHubOperation = Annotated[AnyGitHubOperation, Field(discriminator="op")]
OPERATIONS: Operations[AnyGitHubOperation] = Operations(CHANNEL, GitHubOperation)
