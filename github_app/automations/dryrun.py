"""``handoff automations test``: which rules would fire on a recorded payload, and with what.

Offline: nothing is asked of GitHub and nothing is written. What only GitHub can tell — the
author's role, the changed files — is reported as not checked rather than guessed. A repository's
own ``.handoff.yml`` (``--repo-config``) is bounded exactly as the server bounds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.automations.facts import EventFacts, static_skip
from core.automations.rules import Rule, parse_repo_rules, parse_rules
from core.automations.template import render
from core.config import HandoffConfig
from github_app.automations.engine import dedupe_key, repo_bounds
from github_app.automations.events import facts_of
from github_app.automations.firing import REVIEW_HOWTO
from github_app.repo_config import GitHubServerConfig, resolve


@dataclass
class Verdict:
    """One listening rule's decision on the payload."""

    rule: Rule
    source: str
    fires: bool
    reason: str | None = None
    unchecked: list[str] = field(default_factory=list)
    instructions: str = ""
    dedupe_key: str = ""


@dataclass
class DryRun:
    """Everything ``automations test`` prints."""

    facts: EventFacts | None
    verdicts: list[Verdict] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    problem: str | None = None


def _unchecked(rule: Rule, facts: EventFacts) -> list[str]:
    notes = []
    if rule.filters.author_permission is not None:
        who = facts.author or facts.sender
        notes.append(f"the role of {who} (author_permission: {rule.filters.author_permission})")
    if rule.filters.paths is not None and facts.kind == "pull_request":
        notes.append(f"the changed files (paths: {', '.join(rule.filters.paths)})")
    return notes


def _instructions(rule: Rule, facts: EventFacts) -> str:
    text = render(rule.instructions_template(), facts.values(rule.name)).text
    if rule.do == "review":
        return f"{text}\n\n{REVIEW_HOWTO.format(sha=facts.head_sha)}\n\n# The diff\n\n(the pull request's diff, fenced)"
    if rule.do == "fix-ci":
        return f"{text}\n\n(what failed, from the check runs and job logs, fenced)"
    return text


def dry_run(
    config: HandoffConfig,
    event: str,
    payload: Any,
    *,
    repo_config: str | None = None,
    app_login: str = "handoff[bot]",
) -> DryRun:
    """Decide every rule listening to ``event`` on ``payload`` (see the module docstring)."""
    facts = facts_of(event, payload, "dry-run")
    if facts is None:
        return DryRun(
            None, problem=f"automations do not read this payload as `{event}` (or it names no repository)"
        )
    server = GitHubServerConfig.model_validate(config.github or {})
    rules = [
        (r, "server") for r in parse_rules(config.automations, "automations") if r.applies_to(facts.repo)
    ]
    found = DryRun(facts)
    if repo_config is not None:
        raw = resolve(server, list(config.profiles), repo_config).automations
        repo = parse_repo_rules(raw, repo_bounds(server, list(config.profiles), [r for r, _ in rules]))
        rules += [(r, "repo") for r in repo.rules]
        found.refused = repo.refused
    for rule, source in rules:
        if facts.event not in rule.events:
            continue
        reason = static_skip(rule, facts, app_login, 0)
        if reason is None and facts.fork and rule.do != "review" and not server.fork_pull_requests:
            reason = "the pull request comes from a fork (github.fork_pull_requests is off)"
        verdict = Verdict(rule, source, reason is None, reason)
        if reason is None:
            verdict.unchecked = _unchecked(rule, facts)
            verdict.instructions = _instructions(rule, facts)
            verdict.dedupe_key = dedupe_key(rule, facts)
        found.verdicts.append(verdict)
    return found
