"""What ``Task.links`` holds, typed: where a task came from, where it reports, what it produced.

``Task.links`` is a JSON column; this module is its one reader (:meth:`TaskLinks.of`) and its one
writer (:meth:`TaskLinks.dump`). Everything else reads typed fields — a misspelt key is a type
error, not a silent ``None``. A task may carry several homes at once: :class:`GitHubLinks` (the
issue or pull request, the installation, the repository's checked ``.handoff.yml``) and
:class:`SlackLinks` (the channel and thread); both are optional and independent.

The stored shape is the model's fields by name. :meth:`TaskLinks.dump` writes exactly the fields
that were set (``exclude_unset``), so what a writer gave is what the column holds and a row read
and written back is unchanged; keys this version does not know survive on :class:`TaskLinks`.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.models import Task

MAX_HUNK_CHARS = 4000


class _Part(BaseModel):
    """A typed part of the links: unknown keys are ignored, values are checked."""

    model_config = ConfigDict(extra="ignore")


P = TypeVar("P", bound=_Part)


def _part(model: type[P], task: Task, name: str) -> P | None:
    raw = task.links.get(name) if isinstance(task.links, dict) else None
    if not isinstance(raw, dict):
        return None
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None  # see TaskLinks._home


class PullRequestInfo(_Part):
    """A pull request's head and base, and whether its head lives in a fork."""

    head_sha: str = ""
    head_ref: str = ""
    base_ref: str = ""
    # A head repository GitHub no longer knows (a deleted fork) counts as a fork too.
    fork: bool = False
    head_repo: str = ""


class RepoSettings(_Part):
    """A repository's ``.handoff.yml`` as the GitHub App read and bounded it (default branch only)."""

    agent: str | None = None
    model: str | None = None
    setup: str | None = None
    test: str | None = None
    budget: dict[str, Any] = Field(default_factory=dict)


class GitHubLinks(_Part):
    """Where a GitHub task lives: installation, issue or pull request, and how it was triggered."""

    installation_id: int
    repo: str = ""
    number: int | None = None
    is_pr: bool = False
    default_branch: str = "main"
    # The commit the check run is on (the pull request's head, or the default branch's).
    head_sha: str | None = None
    trigger: str | None = None
    comment_id: int | None = None
    # "issue" (conversation comment), "review" (line comment) or None.
    comment_kind: str | None = None
    pr: PullRequestInfo | None = None
    config: RepoSettings = Field(default_factory=RepoSettings)
    config_notes: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, task: Task) -> GitHubLinks | None:
        """The task's GitHub home, or ``None`` (reads only this part: reporters call it per event)."""
        return _part(cls, task, "github")


class SlackLinks(_Part):
    """Where a Slack task lives: the channel, its thread and the message that asked."""

    team: str | None = None
    channel: str
    thread_ts: str | None = None
    message_ts: str | None = None
    user: str | None = None
    # "command", "mention", "dm" (a task's origin) or "announce" (a channel told about it).
    kind: str | None = None
    allowed_because: str | None = None
    # The thread's web address (a pull request links it), once the thread exists.
    thread_url: str | None = None

    @classmethod
    def of(cls, task: Task) -> SlackLinks | None:
        """The task's Slack home, or ``None`` (reads only this part: reporters call it per event)."""
        return _part(cls, task, "slack")


class AutomationLinks(_Part):
    """The automation rule that started a task, and on what (``core.automations``)."""

    rule: str
    # "server" (handoff.yml) or "repo" (the repository's .handoff.yml).
    source: str = "server"
    # "review" (findings, nothing pushed), "work" or "fix-ci".
    mode: str = "work"
    event: str | None = None
    head_sha: str | None = None
    delivery: str | None = None

    @property
    def publishes(self) -> bool:
        """Whether a run of this task may push: never in review mode."""
        return self.mode != "review"

    @classmethod
    def of(cls, task: Task) -> AutomationLinks | None:
        """The task's automation, or ``None`` (reads only this part: reporters call it per event)."""
        return _part(cls, task, "automation")


class ReviewComment(_Part):
    """Where a pull-request review comment was made: file, line and diff hunk."""

    path: str
    line: int | None = None
    diff_hunk: str | None = None
    commit_id: str | None = None
    comment_url: str | None = None

    def preamble(self) -> str:
        """The file, line and diff hunk, as a preamble to the comment for the agent."""
        where = f"`{self.path}`" + (f" line {self.line}" if self.line else "")
        hunk = (self.diff_hunk or "")[-MAX_HUNK_CHARS:]
        fenced = f"\n```diff\n{hunk}\n```" if hunk else ""
        return f"Review comment on {where}:{fenced}\n\n"


class FollowUpContext(BaseModel):
    """What a follow-up came with: the delivery it came in, and a review comment's location."""

    model_config = ConfigDict(extra="allow")

    delivery: str | None = None
    path: str | None = None
    line: int | None = None
    diff_hunk: str | None = None
    commit_id: str | None = None
    comment_url: str | None = None

    @property
    def review(self) -> ReviewComment | None:
        """The review comment this follow-up answers, if it was one."""
        if not self.path:
            return None
        return ReviewComment(
            path=self.path,
            line=self.line,
            diff_hunk=self.diff_hunk,
            commit_id=self.commit_id,
            comment_url=self.comment_url,
        )


class FollowUp(BaseModel):
    """Instructions added to a task after it was created (``Task.followups``, ``followups_done``)."""

    model_config = ConfigDict(extra="allow")

    text: str = ""
    author: str | None = None
    context: FollowUpContext = Field(default_factory=FollowUpContext)

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @classmethod
    def parse_all(cls, raw: Any) -> list[FollowUp]:
        """Follow-up entries as stored (a JSON list); entries that are not objects are skipped."""
        if not isinstance(raw, list):
            return []
        return [cls.model_validate(entry) for entry in raw if isinstance(entry, dict | FollowUp)]

    def dump(self) -> dict[str, Any]:
        """The stored form (a JSON object)."""
        return self.model_dump(mode="json", exclude_unset=True)


class FollowUpNotice(BaseModel):
    """A follow-up announced on the task's ``status`` event, so every home of the task hears of it.

    ``source`` is where it was asked (``slack``, ``github``, ``api``): a reporter tells its own
    platform about follow-ups asked elsewhere (the asker was already answered where they asked).
    """

    model_config = ConfigDict(extra="ignore")

    KEY: ClassVar[str] = "follow_up"
    MAX_TEXT: ClassVar[int] = 500

    source: str
    author: str
    text: str = ""

    @classmethod
    def for_follow_up(cls, entry: FollowUp) -> FollowUpNotice:
        """The notice of a follow-up entry (its text clipped)."""
        source = (entry.context.delivery or "api").partition(":")[0] or "api"
        text = entry.text if len(entry.text) <= cls.MAX_TEXT else entry.text[: cls.MAX_TEXT - 1] + "…"
        return cls(source=source, author=entry.author or "someone", text=text)

    @classmethod
    def of(cls, data: dict[str, Any]) -> FollowUpNotice | None:
        """The notice on a ``status`` event's data, if there is one."""
        raw = data.get(cls.KEY)
        if not isinstance(raw, dict):
            return None
        try:
            return cls.model_validate(raw)
        except ValidationError:
            return None

    def data(self) -> dict[str, Any]:
        """The event data that carries it."""
        return {self.KEY: self.model_dump(mode="json")}


class PullRequestLink(BaseModel):
    """The pull request a run opened or updated."""

    url: str | None = None
    number: int


class TaskLinks(BaseModel):
    """Everything ``Task.links`` holds; see the module docstring."""

    model_config = ConfigDict(extra="allow")

    # Host-side clone and push URL (a local path or ``file://`` for local repositories).
    clone_url: str | None = None
    # The web page of what asked (the issue or pull request).
    url: str | None = None
    github: GitHubLinks | None = None
    slack: SlackLinks | None = None
    automation: AutomationLinks | None = None
    # ``--model`` / ``--agent`` / ``--base`` given with the request.
    options: dict[str, str] = Field(default_factory=dict)
    # The request's text comes from outside the repository's writers: fenced for the agent.
    untrusted: bool = False
    followups_done: list[FollowUp] = Field(default_factory=list)
    # The built-in agent's saved conversation, waiting for the answer to its question.
    conversation: dict[str, Any] | None = None
    pr_url: str | None = None
    pr_number: int | None = None
    # Pages the dashboard links to when a source records them.
    issue_url: str | None = None
    comment_url: str | None = None
    slack_permalink: str | None = None

    @field_validator("github", "slack", "automation", mode="wrap")
    @classmethod
    def _home(cls, value: Any, handler: Any) -> Any:
        # A home that does not parse (written by an older version, or by hand) is no home: it
        # must never make the whole task unreadable.
        try:
            return handler(value)
        except ValidationError:
            return None

    @field_validator("followups_done", mode="before")
    @classmethod
    def _followups(cls, value: Any) -> list[FollowUp]:
        return FollowUp.parse_all(value)

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            return {}
        return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}

    @classmethod
    def of(cls, task: Task) -> TaskLinks:
        """The task's links, parsed (the one place ``Task.links`` is read)."""
        raw = task.links if isinstance(task.links, dict) else {}
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            # A value of the wrong type (an older version's, or written by hand) is dropped, never
            # the whole task's links.
            bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
            return cls.model_validate({k: v for k, v in raw.items() if k not in bad})

    def dump(self) -> dict[str, Any]:
        """The stored form (the one place ``Task.links`` is written from)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def public(self) -> dict[str, Any]:
        """The stored form without the agent's saved conversation (large, and nobody's business)."""
        return {k: v for k, v in self.dump().items() if k != "conversation"}

    def with_(self, **changes: Any) -> TaskLinks:
        """A copy with ``changes`` applied (validated, and recorded as set)."""
        merged = {**self.model_dump(exclude_unset=True), **changes}
        return TaskLinks.model_validate(merged)

    @property
    def model(self) -> str | None:
        """The model the request asked for (``--model``), if any."""
        return self.options.get("model") or None

    def clone_source(self, repo: str) -> str:
        """What to clone: the recorded clone URL, else the repository as given (a local path)."""
        return self.clone_url or repo

    def followup_history(self, pending: list[dict[str, Any]]) -> list[FollowUp]:
        """Follow-ups done so far, then ``pending`` (``Task.followups``), in order."""
        return [*self.followups_done, *FollowUp.parse_all(pending)]


class LinkChanges(BaseModel):
    """What a run changes in its task's links; the runner applies it when it records the run.

    ``conversation`` counts only when set: ``LinkChanges(conversation=None)`` clears a saved
    conversation, ``LinkChanges()`` leaves it alone.
    """

    pull_request: PullRequestLink | None = None
    conversation: dict[str, Any] | None = None

    @property
    def empty(self) -> bool:
        """True when applying it would change nothing."""
        return self.pull_request is None and "conversation" not in self.model_fields_set

    def merge(self, other: LinkChanges) -> LinkChanges:
        """These changes, then ``other``'s on top."""
        return LinkChanges.model_validate(
            {**self.model_dump(exclude_unset=True), **other.model_dump(exclude_unset=True)}
        )

    def apply(self, links: TaskLinks) -> TaskLinks:
        """``links`` with these changes."""
        changes: dict[str, Any] = {}
        if self.pull_request is not None:
            changes.update(pr_url=self.pull_request.url, pr_number=self.pull_request.number)
        if "conversation" in self.model_fields_set:
            changes["conversation"] = self.conversation
        return links.with_(**changes) if changes else links
