"""An event as automation rules see it (:class:`EventFacts`), and whether a rule fires on it.

Matching has two stages. :func:`static_skip` decides from the payload alone — event name,
repository, sender, draft, labels, branches, conclusion — and costs nothing. :func:`dynamic_skip`
asks a :class:`FactSource` for what needs GitHub (the author's role, the changed files), only for
rules that passed the first stage and only for what they filter on. Each returns the reason a rule
does **not** fire (it goes in the audit log), or ``None``.

Loop safety lives here: an event sent by the App itself never fires a rule (its pushes, its
comments, its own check suites), nor does one sent by another bot unless the rule names that bot
in ``bots:``. The one exception is a CI result on a branch Handoff pushed: GitHub names the App as
the sender of the check suite or workflow run its own push caused, and repairing that CI is what
``fix-ci`` is for (bounded by ``max_attempts`` and the same-failure stop).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.automations.rules import EVENTS, Rule, role_at_least


@dataclass(frozen=True)
class EventFacts:
    """What a rule may test and an instructions template may use, from one event."""

    event: str
    repo: str
    installation_id: int = 0
    delivery_id: str = ""
    sender: str = ""
    sender_is_bot: bool = False
    default_branch: str = "main"
    url: str = ""
    # The pull request or issue (pull requests: also for CI events that name exactly one).
    number: int | None = None
    is_pr: bool = False
    title: str = ""
    body: str = ""
    author: str = ""
    draft: bool | None = None
    labels: tuple[str, ...] = ()
    head_sha: str = ""
    head_ref: str = ""
    base_ref: str = ""
    fork: bool = False
    head_repo: str = ""
    # CI results.
    conclusion: str | None = None
    suite_app_id: int | None = None
    check_suite_id: int | None = None
    workflow_run_id: int | None = None
    workflow: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``pull_request``, ``ci``, ``issue`` or ``push`` (see :data:`core.automations.rules.EVENTS`)."""
        return EVENTS.get(self.event, "other")

    def values(self, rule: str, date: str = "") -> dict[str, str]:
        """The template fields of this event (see :data:`core.automations.template.FIELDS`)."""
        return {
            "rule": rule,
            "repo": self.repo,
            "event": self.event,
            "date": date,
            "number": str(self.number) if self.number is not None else "",
            "head_sha": self.head_sha,
            "conclusion": self.conclusion or "",
            "sender": self.sender,
            "author": self.author,
            "title": self.title,
            "body": self.body,
            "head_ref": self.head_ref,
            "base_ref": self.base_ref,
            "workflow": self.workflow,
            **self.extra,
        }


def glob_match(value: str, patterns: Sequence[str]) -> bool:
    """Whether ``value`` matches one of ``patterns`` (``*`` stops at ``/``, ``**`` crosses it)."""
    return any(_glob(pattern).match(value) for pattern in patterns)


def _glob(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(parts) + "$")


def static_skip(rule: Rule, facts: EventFacts, app_login: str, app_id: int) -> str | None:
    """Why ``rule`` does not fire on ``facts`` judging by the payload alone, or ``None``."""
    if not rule.enabled:
        return "the rule is disabled"
    if facts.event not in rule.events:
        return f"the rule does not listen to {facts.event}"
    if not rule.applies_to(facts.repo):
        return f"the rule does not cover {facts.repo}"
    reason = _sender_skip(rule, facts, app_login, app_id)
    if reason is not None:
        return reason
    f = rule.filters
    if f.draft is not None and facts.is_pr and facts.draft is not None and facts.draft != f.draft:
        return "the pull request is a draft" if facts.draft else "the pull request is not a draft"
    labels = {label.lower() for label in facts.labels}
    missing = [label for label in f.labels if label.lower() not in labels]
    if missing:
        return f"label {', '.join(missing)} is missing"
    present = [label for label in f.labels_absent if label.lower() in labels]
    if present:
        return f"label {', '.join(present)} is present"
    if f.conclusion is not None and (facts.conclusion or "") not in f.conclusion:
        return f"conclusion is {facts.conclusion or 'none'}, not {' or '.join(f.conclusion)}"
    if f.branch is not None and not glob_match(facts.head_ref, f.branch):
        return f"branch {facts.head_ref or '(none)'} does not match {', '.join(f.branch)}"
    if f.base is not None and not glob_match(facts.base_ref, f.base):
        return f"base branch {facts.base_ref or '(none)'} does not match {', '.join(f.base)}"
    return None


def _sender_skip(rule: Rule, facts: EventFacts, app_login: str, app_id: int) -> str | None:
    if facts.suite_app_id is not None and app_id and facts.suite_app_id == app_id:
        return "Handoff's own check suite"
    if app_login and facts.sender.lower() == app_login.lower():
        # A CI result of the App's own push is CI's verdict, not the App acting: fix-ci's job.
        if facts.kind == "ci" and rule.do == "fix-ci":
            return None
        return "sent by the App itself"
    if facts.sender_is_bot and facts.sender.lower() not in {b.lower() for b in rule.bots}:
        return f"sent by the bot {facts.sender} (a rule opts bots in with `bots:`)"
    return None


class FactSource(Protocol):
    """What matching may ask GitHub (``None``: not known, e.g. offline)."""

    async def role(self, login: str) -> str | None:
        """``login`` 's role on the repository."""
        ...

    async def changed_paths(self) -> list[str] | None:
        """The files the pull request changes."""
        ...


async def dynamic_skip(rule: Rule, facts: EventFacts, source: FactSource) -> str | None:
    """Why ``rule`` does not fire judging by what GitHub says, or ``None``.

    A fact the source cannot tell (offline) does not stop the rule; the caller says it was not checked.
    """
    f = rule.filters
    if f.author_permission is not None:
        who = facts.author or facts.sender
        role = await source.role(who) if who else "none"
        if role is not None and not role_at_least(role, f.author_permission):
            return f"{who or 'the author'} has role {role}, below {f.author_permission}"
    if f.paths is not None and facts.kind == "pull_request":
        paths = await source.changed_paths()
        if paths is not None and not any(glob_match(p, f.paths) for p in paths):
            return f"no changed file matches {', '.join(f.paths)}"
    return None


def fnmatch_any(value: str, patterns: Sequence[str]) -> bool:
    """Case-insensitive ``fnmatch`` against any of ``patterns`` (repository names)."""
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)
