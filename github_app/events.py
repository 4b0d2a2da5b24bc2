"""Lenient models of the webhook payload fields Handoff reads (``extra="ignore"``, defaults everywhere).

GitHub adds fields often and omits some on older servers (GHES), so every model ignores unknown
keys and defaults what it can: a payload that lacks a field we need fails validation and is ignored
(answered 2xx), never a 5xx. githubkit's own ``parse()`` is not used: its strict models reject real
payloads whenever the schema and the server disagree.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class User(_Lenient):
    """A user, bot or organisation."""

    login: str = ""
    id: int = 0
    type: str = "User"

    @property
    def is_bot(self) -> bool:
        """GitHub Apps and other bots (``type: Bot`` or a ``[bot]`` login)."""
        return self.type == "Bot" or self.login.endswith("[bot]")


class RepoRef(_Lenient):
    """A repository as listed in installation events."""

    id: int = 0
    name: str = ""
    full_name: str = ""


class Repository(RepoRef):
    """The repository an event happened in."""

    owner: User = Field(default_factory=User)
    default_branch: str = "main"
    private: bool = False
    fork: bool = False
    html_url: str = ""

    @property
    def owner_login(self) -> str:
        """The owner part of ``full_name``."""
        return self.full_name.partition("/")[0] or self.owner.login


class Installation(_Lenient):
    """The App installation that received the event."""

    id: int


class Label(_Lenient):
    """An issue label."""

    name: str = ""


class PullLink(_Lenient):
    """Present on an issue that is a pull request."""

    url: str | None = None
    html_url: str | None = None


class Issue(_Lenient):
    """An issue (or a pull request seen as an issue)."""

    number: int
    title: str = ""
    body: str | None = None
    user: User = Field(default_factory=User)
    html_url: str = ""
    state: str = "open"
    pull_request: PullLink | None = None


class Comment(_Lenient):
    """An issue comment or a pull request review comment."""

    id: int
    body: str | None = None
    user: User = Field(default_factory=User)
    html_url: str = ""
    # Review comments only.
    path: str | None = None
    line: int | None = None
    original_line: int | None = None
    diff_hunk: str | None = None
    commit_id: str | None = None


class Ref(_Lenient):
    """One side (head or base) of a pull request."""

    ref: str = ""
    sha: str = ""
    repo: RepoRef | None = None


class PullRequest(_Lenient):
    """A pull request."""

    number: int
    title: str = ""
    body: str | None = None
    user: User = Field(default_factory=User)
    html_url: str = ""
    state: str = "open"
    merged: bool | None = None
    head: Ref = Field(default_factory=Ref)
    base: Ref = Field(default_factory=Ref)


class Review(_Lenient):
    """A submitted pull request review."""

    id: int
    body: str | None = None
    user: User = Field(default_factory=User)
    html_url: str = ""
    commit_id: str | None = None


class App(_Lenient):
    """The App that owns a check run."""

    id: int = 0
    slug: str | None = None


class CheckRun(_Lenient):
    """A check run (Handoff's own, when ``app.id`` is ours)."""

    id: int
    name: str = ""
    head_sha: str = ""
    external_id: str | None = None
    app: App | None = None


class RequestedAction(_Lenient):
    """The button pressed on a check run."""

    identifier: str = ""


class Envelope(_Lenient):
    """Fields common to every event Handoff routes."""

    action: str | None = None
    sender: User = Field(default_factory=User)
    repository: Repository | None = None
    installation: Installation | None = None


class IssuesEvent(Envelope):
    """``issues``: labeled, assigned."""

    issue: Issue
    label: Label | None = None
    assignee: User | None = None


class IssueCommentEvent(Envelope):
    """``issue_comment``: created (on an issue or a pull request)."""

    issue: Issue
    comment: Comment


class ReviewCommentEvent(Envelope):
    """``pull_request_review_comment``: created."""

    comment: Comment
    pull_request: PullRequest


class ReviewEvent(Envelope):
    """``pull_request_review``: submitted."""

    review: Review
    pull_request: PullRequest


class PullRequestEvent(Envelope):
    """``pull_request``: closed."""

    pull_request: PullRequest


class CheckRunEvent(Envelope):
    """``check_run``: rerequested, requested_action."""

    check_run: CheckRun
    requested_action: RequestedAction | None = None


class InstallationEvent(Envelope):
    """``installation``: deleted, suspend, unsuspend, created, new_permissions_accepted."""

    installation: Installation
    repositories: list[RepoRef] | None = None


class InstallationRepositoriesEvent(Envelope):
    """``installation_repositories``: added, removed."""

    installation: Installation
    repositories_added: list[RepoRef] = Field(default_factory=list)
    repositories_removed: list[RepoRef] = Field(default_factory=list)
