"""``/handoff review``: the review mode on demand, registered in the one command registry (GitHub only).

It does what a review rule does on a push — the pull request's diff to the agent, findings back as
one review with inline comments, a "Handoff review" check run and the summary comment — for the
pull request it is said on, now, whatever the rules' filters say. The settings (agent, budget,
instructions) are those of the first server review rule covering the repository, if any.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.automations.facts import EventFacts
from core.automations.rules import Rule
from core.commands import Command, Registry, Reply, Who
from core.links import TaskLinks
from github_app.errors import GitHubRejected

if TYPE_CHECKING:
    from github_app.automations.engine import Automations

GITHUB = frozenset({"github"})
ON_DEMAND = Rule.model_validate({"name": "review", "events": ["pull_request.opened"], "do": "review"})


async def _pull_number(engine: Automations, cmd: Command) -> int | None:
    """The pull request the command was said on (a Handoff PR's mention carries its task's key)."""
    key = cmd.mention.target_key or ""
    if cmd.mention.on_handoff_pr:
        task = await engine.svc.tasks.for_target(key)
        return TaskLinks.of(task).pr_number if task is not None else None
    number = key.rpartition("#")[2]
    return int(number) if key.startswith("github:") and number.isdigit() else None


def register(registry: Registry, engine: Automations) -> None:
    """Register ``review`` (once per registry)."""
    if "review" in registry:
        return

    @registry.command(
        "review",
        usage="/handoff review",
        description="Review this pull request now: inline comments, a check run and a summary.",
        who_can_use=Who.writers,
        platforms=GITHUB,
        audits_itself=True,
    )
    async def review(cmd: Command, _ctx: object) -> Reply:
        repo = cmd.mention.repo or ""
        number = await _pull_number(engine, cmd)
        if not repo or number is None:
            return Reply("`/handoff review` works on a pull request.", ok=False)
        installation = await engine.api.installation(repo)
        if installation is None:
            return Reply("Handoff is not installed on this repository.", ok=False)
        try:
            pull = await engine.svc.api.pull(installation, repo, number)
        except GitHubRejected as exc:
            if exc.status == 404:
                return Reply("`/handoff review` works on a pull request.", ok=False)
            raise
        rule = next((r for r in engine.rules if r.do == "review" and r.applies_to(repo)), ON_DEMAND)
        facts = _facts(repo, installation, pull, cmd)
        outcome = await engine.on_demand(
            rule, facts, f"review:{repo}#{number}:{facts.head_sha}:{cmd.mention.delivery_id}"
        )
        if not outcome.startswith("fired"):
            return Reply(f"No review started: {outcome}.", ok=False)
        task_id = outcome.removeprefix("fired (").rstrip(")")
        return Reply(f"Reviewing #{number} at `{facts.head_sha[:7]}`: task `{task_id}`.", task_id)


def _facts(repo: str, installation: int, pull: dict[str, object], cmd: Command) -> EventFacts:
    def part(name: str) -> dict[str, object]:
        value = pull.get(name)
        return value if isinstance(value, dict) else {}

    def inner(side: dict[str, object], name: str) -> dict[str, object]:
        value = side.get(name)
        return value if isinstance(value, dict) else {}

    head, base = part("head"), part("base")
    head_repo = str(inner(head, "repo").get("full_name") or "")
    user = part("user")
    labels = pull.get("labels")
    return EventFacts(
        event="command",
        repo=repo,
        installation_id=installation,
        delivery_id=cmd.mention.delivery_id,
        sender=cmd.mention.author,
        default_branch=str(inner(base, "repo").get("default_branch") or "main"),
        url=str(pull.get("html_url") or ""),
        number=int(str(pull.get("number"))),
        is_pr=True,
        title=str(pull.get("title") or ""),
        body=str(pull.get("body") or ""),
        author=str(user.get("login") or ""),
        draft=bool(pull.get("draft")),
        labels=tuple(str(x.get("name")) for x in labels if isinstance(x, dict))
        if isinstance(labels, list)
        else (),
        head_sha=str(head.get("sha") or ""),
        head_ref=str(head.get("ref") or ""),
        base_ref=str(base.get("ref") or ""),
        fork=not head_repo or head_repo.lower() != repo.lower(),
        head_repo=head_repo,
    )
