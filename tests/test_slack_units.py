"""Pure parts of the Slack bot, table-driven: limits, parsing, the allow-list, the reporter."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import blocks, messages
from bot.access import Access
from bot.answers import split_repo, strip_mention
from bot.config import AllowRule, SlackConfig, load_slack_config, parse_slack_config
from bot.doctor import GROUP_SCOPE, REQUIRED_SCOPES
from bot.reporter import SlackReporter, status_key
from core.clock import utcnow
from core.errors import ConfigError
from core.models import Run, RunEvent, Task
from core.snapshot import TaskSnapshot
from core.usage import TokenUsage
from tests.fakes.slack_api import check_message

ROOT = Path(__file__).resolve().parents[1]

# -------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("a" * 5000, 3000),
        ("😀" * 2000, 3000),  # 4,000 UTF-16 units
        ("&" * 2000, 3000),  # escaping triples the length
        ("x" * 10, 3000),
        ("", 3000),
    ],
    ids=["ascii", "emoji", "entities", "short", "empty"],
)
def test_clip_never_exceeds_the_limit_or_splits_an_entity(text: str, limit: int) -> None:
    clipped = blocks.clip(blocks.escape(text), limit)
    assert blocks.slack_len(clipped) <= limit
    assert not clipped.rstrip("…").endswith(("&", "&a", "&am", "&amp", "&l", "&lt", "&g", "&gt"))


def test_split_text_covers_everything_in_section_sized_pieces() -> None:
    text = "\n".join(f"line {i} " + "y" * (i % 300) for i in range(2000)) + "\n" + "z" * 7000
    pieces = blocks.split_text(text)
    assert all(blocks.slack_len(p) <= blocks.MAX_SECTION for p in pieces)
    assert "".join(p.replace("\n", "") for p in pieces) == text.replace("\n", "")


def test_sections_cap_the_number_of_blocks() -> None:
    made = blocks.sections("w" * 200_000, max_blocks=10)
    assert len(made) == 10 and "cut" in made[-1]["text"]["text"]


def test_code_block_keeps_the_end_of_a_huge_log() -> None:
    lines = [str(i) for i in range(10_000)] + ["x" * 50_000, "```<!here>```"]
    code = blocks.code_block(lines)
    assert blocks.slack_len(code) <= blocks.MAX_SECTION
    assert code.startswith("```\n") and code.endswith("\n```")
    assert "9999" in code and "&lt;!here&gt;" in code and "<!here>" not in code
    assert code.count("```") == 2


def test_fit_message_repairs_anything() -> None:
    huge = [blocks.section("s" * 10) for _ in range(80)]
    huge[3] = {"type": "section", "text": {"type": "mrkdwn", "text": "t" * 9000}}
    huge.append(blocks.actions(blocks.button("b" * 200, "handoff_x", value="v" * 5000)))
    text, fitted = blocks.fit_message("n" * 100_000, huge)
    assert check_message(text, fitted) is None
    assert len(fitted) == 50 and fitted[-1]["type"] == "actions"


def _task(**overrides: Any) -> Task:
    values: dict[str, Any] = {
        "id": "t_0123456789abcdef",
        "repo": "acme/demo",
        "instructions": "do it",
        "requester": "alice",
        "links": {"slack": {"channel": "C1", "user": "U1"}},
    }
    values.update(overrides)
    return Task(**values)


@pytest.mark.parametrize(
    "task",
    [
        _task(state="running", instructions="i" * 50_000),
        _task(state="succeeded", summary="s" * 200_000, pr_url="https://github.com/acme/demo/pull/1"),
        _task(state="failed", state_reason="r" * 20_000 + "<!channel>"),
        _task(state="waiting", state_reason="concurrency limit"),
    ],
    ids=["long-instructions", "huge-summary", "long-reason", "waiting"],
)
def test_status_message_is_always_valid(task: Task) -> None:
    run = Run(task_id=task.id, attempt=2, started_at=utcnow() - timedelta(seconds=75))
    view = TaskSnapshot(
        task,
        run,
        step="s" * 5000,
        log_tail=["l" * 90_000] * 5,
        position=3,
        usage=TokenUsage(1234, 56, 0.0123),
    )
    text, made = messages.status_message(view, "http://handoff.test")
    assert check_message(text, made) is None
    flat = str(made)
    assert "<!channel>" not in flat
    assert "Tokens: 1,234 in / 56 out" in flat and "$0.0123" in flat and "Elapsed: 1m 15s" in flat


@pytest.mark.parametrize(
    ("state", "buttons"),
    [
        ("running", ["handoff_cancel", "handoff_view_run"]),
        ("failed", ["handoff_retry", "handoff_view_run"]),
    ],
)
def test_buttons_follow_the_state(state: str, buttons: list[str]) -> None:
    block = messages.buttons(_task(state=state), "http://handoff.test/")
    assert [e["action_id"] for e in block["elements"]] == buttons
    assert block["elements"][-1]["url"] == "http://handoff.test/tasks/t_0123456789abcdef"


# -------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "trailing", "repo", "rest"),
    [
        ("acme/api fix the bug", False, "acme/api", "fix the bug"),
        ("--agent short acme/api fix it", False, "acme/api", "--agent short fix it"),
        ("fix the bug in acme/api", True, "acme/api", "fix the bug"),
        ("fix the bug in acme/api", False, None, "fix the bug in acme/api"),
        ("fix the bug", True, None, "fix the bug"),
        ("acme/api", False, "acme/api", ""),
        ("line one\nline two in acme/x.y", True, "acme/x.y", "line one\nline two"),
    ],
    ids=["leading", "after-options", "trailing", "trailing-off", "none", "repo-only", "multiline"],
)
def test_split_repo(text: str, trailing: bool, repo: str | None, rest: str) -> None:
    assert split_repo(text, trailing=trailing) == (repo, rest)


def test_strip_mention() -> None:
    assert strip_mention("<@U0BOT> fix <@U1> bug", "U0BOT") == "fix <@U1> bug"
    assert strip_mention("<@U0BOT|handoff> hi", "U0BOT") == "hi"


# -------------------------------------------------------------------------- allow-list


class _NoStore:
    sessions: Any = None


async def _groups(group: str) -> list[str]:
    if group == "S0DOWN":
        raise OSError("slack unreachable")
    return {"S0DEV": ["U0GROUPIE"]}.get(group, [])


CONFIG = SlackConfig(
    admins=["U0ADMIN"],
    allow=[
        AllowRule(repos=["acme/api"], users=["U0ALICE"], channels=["C0OPEN"]),
        AllowRule(repos=["acme/*"], usergroups=["S0DEV", "S0DOWN"]),
    ],
    github_logins={"U0ALICE": "alice"},
)


@pytest.mark.parametrize(
    ("user", "channel", "repo", "allowed"),
    [
        ("U0ALICE", "C0ANY", "acme/api", True),
        ("U0ALICE", "C0ANY", "ACME/API", True),
        ("U0ALICE", "C0ANY", "acme/web", False),
        ("U0MALLORY", "C0OPEN", "acme/api", True),
        ("U0MALLORY", "C0ANY", "acme/api", False),
        ("U0GROUPIE", "C0ANY", "acme/web", True),
        ("U0GROUPIE", "C0ANY", "other/web", False),
        ("U0ADMIN", "C0ANY", "anything/at-all", True),
    ],
    ids=[
        "user",
        "case-insensitive",
        "user-other-repo",
        "channel",
        "outside-channel",
        "group",
        "group-other-owner",
        "admin",
    ],
)
async def test_allow_list(user: str, channel: str, repo: str, allowed: bool) -> None:
    access = Access(CONFIG, _NoStore(), _groups)  # type: ignore[arg-type]
    decision = await access.may_start(user, channel, repo)
    assert decision.allowed is allowed, decision.reason
    if not allowed:
        assert repo in decision.reason and "slack.allow" in decision.reason


def test_identities_and_own_repos() -> None:
    access = Access(CONFIG, _NoStore())  # type: ignore[arg-type]
    assert access.identity("U0ALICE") == "alice" and access.identity("U9") == "slack:U9"
    assert access.own_repos("U0ALICE") == ["acme/api"]


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ({"allow": [{"users": ["U1"]}]}, "slack.allow.0.repos"),
        ({"command": "handoff"}, "slack.command"),
        ({"admin": ["U1"]}, "slack.admin"),
    ],
    ids=["rule-without-repos", "bad-command", "typo"],
)
def test_bad_config_names_the_key(section: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace(".", r"\.")):
        parse_slack_config(section)


def test_config_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "handoff.yml"
    path.write_text(yaml.safe_dump({"slack": {"admins": ["U1"], "channels": {"C1": "acme/api"}}}))
    assert load_slack_config(path).channels == {"C1": "acme/api"}
    assert load_slack_config(None) == SlackConfig()


# -------------------------------------------------------------------------- reporter


def _event(seq: int, type_: str, data: dict[str, Any]) -> RunEvent:
    return RunEvent(task_id="t_0123456789abcdef", seq=seq, type=type_, data=data)


def test_reporter_maps_events_to_status_upserts_and_milestones() -> None:
    reporter = SlackReporter()
    task = _task(links={"slack": {"channel": "C1", "thread_ts": "1.1", "message_ts": "1.1", "user": "U1"}})
    cases = {
        "queued": _event(1, "status", {"state": "queued"}),
        "started": _event(2, "status", {"state": "running", "from": "queued", "attempt": 1}),
        "log": _event(3, "log", {"text": "x"}),
        "log25": _event(25, "log", {"text": "x"}),
        "question": _event(26, "question", {"question": "which DB?"}),
        "failed": _event(
            27,
            "status",
            {
                "state": "failed",
                "from": "running",
                "reason": "exit 3",
                "pr_url": "https://github.com/acme/demo/pull/3",
                "attempt": 1,
            },
        ),
    }
    out = {name: reporter.messages(task, event) for name, event in cases.items()}
    assert [m.key for m in out["queued"]] == [status_key(task.id)]
    assert out["log"] == [] and [m.kind for m in out["log25"]] == ["upsert"]
    assert "Started (attempt 1)" in out["started"][1].op.payload()["text"]
    assert "which DB?" in out["question"][1].op.payload()["text"]
    kinds = [(m.op.payload()["op"], m.op.payload().get("broadcast")) for m in out["failed"]]
    assert kinds == [("status", None), ("reply", False), ("reply", True), ("react", None)]
    assert "Pull request opened" in out["failed"][1].op.payload()["text"]
    assert out["failed"][2].op.payload()["log_tail"] == 20
    keys = [m.idempotency_key for ms in out.values() for m in ms if m.idempotency_key]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("source", "slack_told", "github_told"),
    [("github", True, False), ("slack", False, True), ("api", True, True)],
    ids=["asked-on-github", "asked-in-slack", "asked-through-the-api"],
)
def test_a_follow_up_is_told_to_the_homes_it_was_not_asked_in(
    source: str, slack_told: bool, github_told: bool
) -> None:
    from core.links import FollowUp, FollowUpContext, FollowUpNotice
    from github_app.crosspost import FollowUpReporter

    links = {
        "slack": {"channel": "C1", "thread_ts": "1.1", "user": "U1"},
        "github": {"installation_id": 7, "repo": "acme/demo"},
        "pr_number": 12,
    }
    task = _task(links=links)
    entry = FollowUp(
        text="also @team close #3 " + "x" * 600,
        author="alice",
        context=FollowUpContext(delivery=f"{source}:d1"),
    )
    notice = FollowUpNotice.for_follow_up(entry)
    assert notice.source == source and len(notice.text) == FollowUpNotice.MAX_TEXT
    event = _event(9, "status", {"state": "running", **notice.data()})
    replies = [m for m in SlackReporter().messages(task, event) if m.op.payload()["op"] == "reply"]
    assert bool(replies) is slack_told
    if replies:
        assert "Follow-up from *alice*" in replies[0].op.payload()["text"]
    comments = FollowUpReporter().messages(task, event)
    assert bool(comments) is github_told
    if comments:
        body = comments[0].op.payload()["body"]
        # Said on GitHub in Handoff's voice: the asker's words are quoted, their mentions made inert.
        assert comments[0].op.payload()["number"] == 12 and "@team" not in body and "> also @" in body
    # Without a pull request (yet), GitHub has nowhere to be told.
    assert FollowUpReporter().messages(_task(links={**links, "pr_number": None}), event) == []


def test_reporter_ignores_tasks_without_a_slack_home_unless_announced() -> None:
    github = _task(source="github_issue", links={}, repo="acme/api")
    assert SlackReporter().messages(github, _event(1, "status", {"state": "queued"})) == []
    announced = SlackReporter(lambda repo: "C0API" if repo == "acme/api" else None)
    [upsert] = announced.messages(github, _event(1, "status", {"state": "queued"}))
    assert upsert.op.payload()["channel"] == "C0API" and upsert.op.payload()["thread_ts"] is None


# -------------------------------------------------------------------------- onboarding and layering


def test_manifest_matches_what_the_bot_needs() -> None:
    manifest = yaml.safe_load((ROOT / "slack-manifest.yml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert REQUIRED_SCOPES | {GROUP_SCOPE} == scopes
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.im"} <= events
    assert manifest["features"]["slash_commands"][0]["command"] == SlackConfig().command
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    urls = {
        manifest["settings"]["event_subscriptions"]["request_url"],
        manifest["settings"]["interactivity"]["request_url"],
        manifest["features"]["slash_commands"][0]["url"],
    }
    assert {u.rsplit("/", 2)[-2:] == ["slack", "events"] for u in urls} == {True}


def test_bot_imports_only_core_and_its_sdks() -> None:
    for path in (ROOT / "bot").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in ("jobs", "web", "github_app"), (
                    path.name,
                    node.module,
                )
