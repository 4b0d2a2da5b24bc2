"""Pure pieces of the GitHub App: command text, per-repo config bounds, screens, rendering limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.models import Run, Task
from core.snapshot import TaskSnapshot
from github_app.events import IssueCommentEvent
from github_app.render import Page, check_run, checklist, tracking_comment
from github_app.replay import infer_event
from github_app.repo_config import BudgetBounds, GitHubServerConfig, resolve
from github_app.routing import Screening, command_text
from github_app.triggers import build_event_registry
from tests.support.github import example

SCREEN = Screening(slug="handoff", bot_login="handoff[bot]", app_id=4242)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/handoff fix the test", "fix the test"),
        ("/handoff", ""),
        ("  /handoff\nmulti\nline", "multi\nline"),
        ("/handoffs fix", None),
        ("please @handoff fix the flaky test", "please fix the flaky test"),
        ("@handoff[bot] status", "status"),
        ("@handoffer fix", None),
        ("email me at x@handoff.dev", None),
        ("fix it /handoff", None),
        ("", None),
    ],
    ids=[
        "slash",
        "bare",
        "multiline",
        "prefix-word",
        "mention",
        "bot-mention",
        "other-user",
        "email",
        "late",
        "empty",
    ],
)
def test_command_text(body: str, expected: str | None) -> None:
    assert command_text(body, "handoff") == expected


@pytest.mark.parametrize(
    ("yml", "value", "note"),
    [
        ("agent: scripted", {"agent": "scripted"}, None),
        ("agent: rogue", {"agent": None}, "agent `rogue` is not allowed"),
        ("model: gpt-x", {"model": None}, "model `gpt-x` is not allowed"),
        ("model: m1", {"model": "m1"}, None),
        ("trigger_label: ai", {"trigger_label": "ai"}, None),
        ("budget: {max_cost_usd: 50}", {"budget": {}}, "above this server's bounds"),
        ("budget: {max_cost_usd: 2}", {"budget": {"max_cost_usd": 2}}, None),
        ("setup: make deps", {"setup": None}, "may not be set per repository"),
        ("colour: red", {}, "not a `.handoff.yml` setting"),
        ("agent: [unclosed", {}, "not valid YAML"),
        ("- a list", {}, "must be a mapping"),
    ],
    ids=[
        "agent",
        "agent-refused",
        "model-refused",
        "model",
        "label",
        "budget-over",
        "budget",
        "not-overridable",
        "unknown",
        "bad-yaml",
        "not-mapping",
    ],
)
def test_repo_config_bounds(yml: str, value: dict[str, Any], note: str | None) -> None:
    server = GitHubServerConfig(
        allowed_overrides=["trigger_label", "agent", "model", "budget"],
        agents=["shell", "scripted"],
        models=["m1"],
        max_budget=BudgetBounds(max_cost_usd=10),
    )
    config = resolve(server, ["shell", "scripted", "rogue"], yml)
    for key, expected in value.items():
        assert getattr(config, key) == expected
    if note is None:
        assert config.notes == []
    else:
        assert any(note in n for n in config.notes), config.notes


def _comment(body: str, **sender: Any) -> dict[str, Any]:
    payload = example("issue_comment", "created")
    payload["installation"] = {"id": 1}
    payload["comment"]["body"] = body
    payload["comment"]["user"].update(sender)
    payload["sender"].update(sender)
    return payload


@pytest.mark.parametrize(
    ("payload", "ignored"),
    [
        (_comment("/handoff fix"), None),
        (_comment("just chatting"), "ignored: not addressed to Handoff"),
        (_comment("/handoff fix", login="handoff[bot]", type="Bot"), "ignored: sent by a bot"),
        (_comment("/handoff fix", login="dependabot[bot]", type="Bot"), "ignored: sent by a bot"),
        (_comment("<!-- handoff:github:reply:x -->\n@a /handoff help"), "ignored: sent by a bot"),
        ({**_comment("/handoff x"), "installation": None}, "ignored: not sent to an App installation"),
    ],
    ids=["addressed", "chat", "our-bot", "other-bot", "our-marker", "no-installation"],
)
def test_request_time_screen(payload: dict[str, Any], ignored: str | None) -> None:
    screened = build_event_registry().screen("issue_comment", payload, SCREEN)
    assert screened.ignored == ignored
    if ignored is None:
        assert (
            screened.slim is not None
            and IssueCommentEvent.model_validate(screened.slim).comment.body == "/handoff fix"
        )


def test_every_event_of_the_issue_is_routed() -> None:
    routed = set(build_event_registry().events)
    assert {
        "issues.labeled",
        "issues.assigned",
        "issue_comment.created",
        "pull_request_review_comment.created",
        "pull_request_review.submitted",
        "pull_request.closed",
        "check_run.rerequested",
        "check_run.requested_action",
        "installation.deleted",
        "installation.suspend",
        "installation_repositories.removed",
    } <= routed


def _view(**changes: Any) -> Page:
    """A rendering page from a task snapshot built in memory (what the database would say)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base: dict[str, Any] = {
        "state": "running",
        "reason": None,
        "created_at": now - timedelta(seconds=75),
        "finished_at": None,
        "attempt": 1,
        "steps": {"checkout", "agent"},
        "latest_step": "editing",
    }
    v = {**base, **changes}
    task = Task(
        id="t_1",
        repo="o/r",
        instructions="x",
        state=v["state"],
        state_reason=v["reason"],
        created_at=v["created_at"],
        finished_at=v["finished_at"],
        pr_url=v.get("pr_url"),
        summary=v.get("summary"),
        links={"pr_number": v["pr_number"]} if v.get("pr_number") else {},
    )
    run = Run(task_id="t_1", attempt=v["attempt"]) if v["attempt"] else None
    snap = TaskSnapshot(
        task,
        run,
        now=now,
        step=v["latest_step"],
        steps=v["steps"],
        position=v.get("position"),
        files=v.get("files", []),
        errors=v.get("errors", []),
    )
    return Page(snap, "http://h/tasks/t_1")


def test_checklist_follows_the_run() -> None:
    assert checklist(_view().snap) == [
        "- ✅ Queued",
        "- ✅ Repository checked out",
        "- ⏳ Agent at work — editing",
        "- ⬜ Branch pushed",
        "- ⬜ Pull request opened",
    ]
    done = checklist(
        _view(
            state="succeeded", files=["a"], pr_url="u", pr_number=3, steps={"checkout", "agent", "push"}
        ).snap
    )
    assert all(line.startswith("- ✅") for line in done)
    failed = checklist(_view(state="failed", finished_at=datetime(2026, 1, 1, tzinfo=UTC)).snap)
    assert "- ❌ Agent at work — editing" in failed


def test_rendering_respects_limits_and_redacts() -> None:
    secret = "ghs_" + "Z" * 36
    view = _view(
        state="failed",
        reason=f"push failed with {secret}",
        files=[f"file{i}.py" for i in range(500)],
        errors=["e" * 70_000, f"token {secret}"],
        summary="s" * 70_000,
        finished_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    body = tracking_comment(view, "github:comment:t_1")
    assert (
        len(body) <= 65_536 and secret not in body and body.startswith("<!-- handoff:github:comment:t_1 -->")
    )
    assert "`/handoff retry`" in body and "1m 15s" in body
    run = check_run(view, "Handoff")
    assert run["conclusion"] == "failure" and len(run["actions"]) <= 3
    assert all(len(a["label"]) <= 20 and len(a["description"]) <= 40 for a in run["actions"])
    assert len(run["output"]["summary"]) <= 65_535 and len(run["output"]["text"]) <= 65_535
    assert secret not in str(run)
    waiting = tracking_comment(_view(state="waiting", reason="concurrency limit", position=3, attempt=0), "k")
    assert "| Queue position | 3 |" in waiting


@pytest.mark.parametrize(
    ("name", "payload", "event"),
    [
        ("issue_comment.created.json", {}, "issue_comment"),
        ("x.json", {"action": "requested_action", "requested_action": {}, "check_run": {}}, "check_run"),
        ("x.json", {"comment": {}, "pull_request": {}}, "pull_request_review_comment"),
        ("x.json", {"comment": {}, "issue": {}}, "issue_comment"),
        ("x.json", {"issue": {}, "label": {}}, "issues"),
    ],
    ids=["file-name", "check-run", "review-comment", "issue-comment", "issues"],
)
def test_replay_infers_the_event(name: str, payload: dict[str, Any], event: str) -> None:
    assert infer_event(Path(name), payload) == event
