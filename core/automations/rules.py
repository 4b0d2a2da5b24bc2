"""The automation rule: event (or schedule) + filters + action + agent + instructions + budget.

Rules come from the server's ``handoff.yml`` (``automations:``, checked at start-up: a bad rule
stops the process with a message naming it) and, within the bounds the server sets, from a
repository's default-branch ``.handoff.yml`` (checked on every read: a refused rule is reported to
the repository, never fatal). ``events``, not ``on``: YAML 1.1 reads a bare ``on`` key as ``true``.

::

    automations:
      - name: review-prs
        events: [pull_request.opened, pull_request.synchronize]
        if: {draft: false, author_permission: write, paths: ["src/**"], labels_absent: [no-review]}
        do: review                      # review | work | fix-ci
        agent: builtin
        budget: {max_cost_usd: 0.50}
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.automations.cron import parse_cron
from core.automations.template import placeholders
from core.budget import Budget

Action = Literal["review", "work", "fix-ci"]
Role = Literal["read", "triage", "write", "maintain", "admin"]
ROLE_ORDER = ("none", "read", "triage", "write", "maintain", "admin")

# The events a rule may name, and what kind of thing each is about.
EVENTS: dict[str, str] = {
    "pull_request.opened": "pull_request",
    "pull_request.reopened": "pull_request",
    "pull_request.synchronize": "pull_request",
    "pull_request.ready_for_review": "pull_request",
    "pull_request.labeled": "pull_request",
    "check_suite.completed": "ci",
    "workflow_run.completed": "ci",
    "issues.opened": "issue",
    "push": "push",
}
# What each action can act on.
ACTION_KINDS: dict[str, frozenset[str]] = {
    "review": frozenset({"pull_request"}),
    "fix-ci": frozenset({"ci"}),
    "work": frozenset({"pull_request", "ci", "issue", "push"}),
}
DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "review": "Review pull request #{number} ({title}) in {repo}.",
    "fix-ci": "The checks failed on {head_sha} ({workflow}). Make them pass.",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_REPO_PATTERN = re.compile(r"^[A-Za-z0-9_.*?-]+/[A-Za-z0-9_.*?-]+$|^\*$")
_BOT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*\[bot\]$")


def _listed(value: Any) -> Any:
    """A single string where a list is expected becomes a one-item list."""
    return [value] if isinstance(value, str) else value


class Filters(BaseModel):
    """The ``if:`` of a rule: every condition given must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    draft: bool | None = None
    # The pull request's (or issue's) author must have at least this role on the repository.
    author_permission: Role | None = None
    # At least one changed file matches one of these globs (``**`` crosses directories).
    paths: tuple[str, ...] | None = None
    labels: tuple[str, ...] = ()
    labels_absent: tuple[str, ...] = ()
    conclusion: tuple[str, ...] | None = None
    # Head branch (or pushed branch) globs, and base branch globs.
    branch: tuple[str, ...] | None = None
    base: tuple[str, ...] | None = None

    @field_validator("paths", "labels", "labels_absent", "conclusion", "branch", "base", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _listed(value)


class RateLimit(BaseModel):
    """How often a rule may fire on one repository."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_hour: int = Field(default=20, ge=1, le=10_000)


class Rule(BaseModel):
    """One automation rule (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    events: tuple[str, ...] = ()
    schedule: str | None = None
    # Server rules: repositories (globs); empty means every repository the App is installed on.
    repos: tuple[str, ...] = ()
    filters: Filters = Field(default_factory=Filters, alias="if")
    do: Action
    agent: str | None = None
    model: str | None = None
    instructions: str | None = None
    budget: Budget = Field(default_factory=Budget)
    # A template; default: rule, repository and head commit (or issue, or schedule time).
    dedupe: str | None = None
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    max_attempts: int = Field(default=3, ge=1, le=20, description="fix-ci: fixes tried per pull request")
    # Bot logins (``name[bot]``) whose events may trigger this rule; never the App itself.
    bots: tuple[str, ...] = ()
    enabled: bool = True

    @field_validator("events", "repos", "bots", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _listed(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "letters, digits, '.', '_' and '-' (at most 63), starting with a letter or digit"
            )
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [e for e in value if e not in EVENTS]
        if unknown:
            raise ValueError(f"unknown event {', '.join(unknown)} (events: {', '.join(EVENTS)})")
        return value

    @field_validator("repos")
    @classmethod
    def _repos(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in value if not _REPO_PATTERN.match(r)]
        if bad:
            raise ValueError(f"not owner/name patterns: {', '.join(bad)}")
        return value

    @field_validator("bots")
    @classmethod
    def _bots(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [b for b in value if not _BOT.match(b)]
        if bad:
            raise ValueError(f"bot logins end in [bot]: {', '.join(bad)}")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cron(value)
        return value

    @field_validator("instructions", "dedupe")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            placeholders(value)
        return value

    @model_validator(mode="after")
    def _shape(self) -> Rule:
        if bool(self.events) == bool(self.schedule):
            raise ValueError("give either events or a schedule")
        if self.schedule is not None:
            if self.do != "work":
                raise ValueError("a schedule can only `do: work`")
            if not self.repos or any(set(r) & set("*?") for r in self.repos):
                raise ValueError("a schedule names its repositories (no patterns): repos: [owner/name]")
            if not self.instructions:
                raise ValueError("a schedule needs instructions")
        kinds = {EVENTS[e] for e in self.events}
        wrong = sorted(kinds - ACTION_KINDS[self.do])
        if wrong:
            raise ValueError(f"`do: {self.do}` cannot act on {' or '.join(wrong)} events")
        if self.do == "work" and not self.instructions:
            raise ValueError("`do: work` needs instructions")
        return self

    @property
    def key(self) -> str:
        """How the rule is named in firings and task links."""
        return self.name

    def applies_to(self, repo: str) -> bool:
        """Whether the rule covers ``repo`` (by ``repos``; none listed: every repository)."""
        if not self.repos:
            return True
        return any(fnmatch.fnmatchcase(repo.lower(), pattern.lower()) for pattern in self.repos)

    def instructions_template(self) -> str:
        """The rule's instructions, or the action's default."""
        return self.instructions or DEFAULT_INSTRUCTIONS.get(self.do, "")


def problems(exc: ValidationError) -> str:
    """A validation error as one line: ``field: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )


def parse_rules(raw: Any, where: str) -> list[Rule]:
    """The server's ``automations:`` list; ``ValueError`` names the first bad rule."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: a list of rules")
    rules: list[Rule] = []
    for i, entry in enumerate(raw):
        label = f"{where}[{i}]" + (f" ({entry.get('name')})" if isinstance(entry, dict) else "")
        try:
            rules.append(Rule.model_validate(entry))
        except ValidationError as exc:
            raise ValueError(f"{label}: {problems(exc)}") from exc
    names = [r.name for r in rules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{where}: rule names must be unique ({', '.join(twice)})")
    return rules


@dataclass(frozen=True)
class RepoBounds:
    """What a repository's own rules may do: the server's ``github:`` bounds."""

    allowed: bool
    agents: Collection[str] | None
    models: Collection[str] | None
    max_budget: dict[str, float | int | None] = field(default_factory=dict)
    reserved: frozenset[str] = frozenset()


@dataclass
class RepoRules:
    """A repository's rules in effect, and each refused one: ``(name, reason)``."""

    rules: list[Rule] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def parse_repo_rules(raw: Any, bounds: RepoBounds) -> RepoRules:
    """A repository's ``automations:`` within ``bounds``: each rule kept or refused with a reason."""
    found = RepoRules()
    if raw is None:
        return found
    if not bounds.allowed:
        found.refused.append(
            (
                "*",
                "`automations` may not be set per repository on this server "
                "(`github.allowed_overrides` does not list it); none of these rules run",
            )
        )
        return found
    if not isinstance(raw, list):
        found.refused.append(("*", "`automations` must be a list of rules; ignored"))
        return found
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        name = str(entry.get("name")) if isinstance(entry, dict) else f"#{i + 1}"
        try:
            rule = Rule.model_validate(entry)
        except ValidationError as exc:
            found.refused.append((name, f"invalid: {problems(exc)}"))
            continue
        reason = _out_of_bounds(rule, bounds, seen)
        if reason:
            found.refused.append((rule.name, reason))
            continue
        seen.add(rule.name)
        found.rules.append(rule)
    return found


def _out_of_bounds(rule: Rule, bounds: RepoBounds, seen: set[str]) -> str | None:
    if rule.name in seen or rule.name in bounds.reserved:
        return "another rule has this name (the server's rules come first)"
    if rule.schedule is not None:
        return "schedules are set in the server's handoff.yml"
    if rule.repos:
        return "`repos` is for the server's rules; a repository's rules apply to itself"
    if rule.agent is not None and bounds.agents is not None and rule.agent not in bounds.agents:
        return f"agent `{rule.agent}` is not allowed here (allowed: {', '.join(sorted(bounds.agents))})"
    if rule.model is not None and bounds.models is not None and rule.model not in bounds.models:
        return f"model `{rule.model}` is not allowed here (allowed: {', '.join(sorted(bounds.models))})"
    over = [
        f"{name} {value:g} > {limit:g}"
        for name, limit in bounds.max_budget.items()
        if limit is not None
        and (value := getattr(rule.budget, name, None)) is not None
        and float(value) > float(limit)
    ]
    if over:
        return f"its budget is above this server's bounds ({', '.join(over)})"
    return None


def role_at_least(role: str, minimum: str) -> bool:
    """Whether ``role`` (admin, maintain, write, triage, read, none) is at least ``minimum``."""
    rank = {r: i for i, r in enumerate(ROLE_ORDER)}
    return rank.get(role, 0) >= rank.get(minimum, len(ROLE_ORDER))
