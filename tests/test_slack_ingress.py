"""Slack ingress over HTTP: signatures, every signed request answered 2xx, dedupe, the job that
turns a recorded request into a task, the allow-list, commands.

Requests are built from Slack's documented payload shapes and signed with the v0 scheme; they are
recorded and queued for real (PostgreSQL/SQLite, Redis), and a real arq worker runs the
``slack_ingest`` job — but no agent runs here (tasks stay queued).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.fakes.slack_api import BOT_USER, SIGNING_SECRET, sign
from tests.support.slack import (
    ADMIN,
    ALICE,
    BOB,
    BOUND,
    MALLORY,
    REPO,
    UNBOUND,
    Rig,
    slack_rig,
)


@pytest.fixture
async def rig(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with slack_rig(settings, tmp_path) as r:
        yield r


async def test_slash_command_is_recorded_before_the_ack_and_becomes_a_task_in_the_job(rig: Rig) -> None:
    slash = await rig.slash("add a CHANGELOG entry", user=ALICE, channel=BOUND)
    assert slash.response.json() == {
        "response_type": "ephemeral",
        "text": ":eyes: Got it — the task's status follows in this channel in a moment.",
    }
    # Durable before the acknowledgement went out: the request itself is on its delivery row.
    [recorded] = await rig.deliveries()
    assert recorded.id == slash.delivery and recorded.team_id == "T0HANDOFF"
    task = await rig.task_of(slash)
    # The job made the task, with the right people and places, and dropped the request from the row.
    assert task.source == "slack" and task.repo == REPO and task.state == "queued"
    assert task.requester == "alice"  # the Slack user's linked GitHub login
    assert task.links["slack"] == {
        "team": "T0HANDOFF",
        "channel": BOUND,
        "user": ALICE,
        "kind": "command",
        "allowed_because": "user listed for acme/demo",  # why the allow-list let it through
    }
    assert task.links["clone_url"] == f"{rig.settings.github_git_url}/{REPO}.git"
    [delivery] = await rig.deliveries()
    assert delivery.task_id == task.id and delivery.outcome == "ok" and delivery.payload is None
    assert [e.decision for e in await rig.audit("create")] == ["allowed"]
    # Its status message is the answer: nothing more is said through the response_url.
    assert await rig.answer(slash) == ""
    [status] = rig.fake.bot_messages(BOUND)
    assert task.id in str(status.blocks)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"timestamp": int(time.time()) - 301}, "stale"),
        ({"tamper": True}, "tampered"),
        ({"secret": "not-the-secret"}, "wrong-secret"),
    ],
    ids=["stale-timestamp", "tampered-body", "wrong-secret"],
)
async def test_unverified_requests_get_401_and_nothing_happens(
    rig: Rig, change: dict[str, object], why: str
) -> None:
    from urllib.parse import urlencode

    body = urlencode(rig.slack.slash_body("rm -rf /", user=ALICE, channel=BOUND)).encode()
    if "secret" in change:
        headers = sign(body, str(change["secret"]))
        response = await rig.slack.client.post(
            rig.slack.events_url,
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
    else:
        response = await rig.slack.post(
            body,
            "application/x-www-form-urlencoded",
            timestamp=change.get("timestamp"),  # type: ignore[arg-type]
            tamper=bool(change.get("tamper")),
        )
    assert response.status_code == 401, why
    assert await rig.tasks() == [] and await rig.deliveries() == [] and await rig.audit() == []
    assert rig.fake.calls == []  # not even auth.test: bolt never saw the request


async def test_missing_signature_is_401(rig: Rig) -> None:
    response = await rig.slack.client.post(
        rig.slack.events_url, json={"type": "url_verification", "challenge": "x"}
    )
    assert response.status_code == 401


async def test_url_verification_echoes_the_challenge(rig: Rig) -> None:
    body = json.dumps(
        {
            "token": "t",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    response = await rig.slack.post(body, "application/json")
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


async def test_retried_event_is_processed_once(rig: Rig) -> None:
    event = rig.slack.mention("echo hi > NOTES.md", user=ALICE, channel=BOUND)
    first = await rig.slack.event(event, event_id="Ev0RETRY001")
    # Slack's retries (same event_id), one of them racing the others.
    again = await asyncio.gather(
        rig.slack.event(event, event_id="Ev0RETRY001", retry_num=1),
        rig.slack.event(event, event_id="Ev0RETRY001", retry_num=2),
        rig.slack.event(event, event_id="Ev0RETRY001", retry_num=3),
    )
    assert [r.status_code for r in (first, *again)] == [200, 200, 200, 200]
    await rig.handled()
    tasks = await rig.tasks()
    assert len(tasks) == 1
    assert tasks[0].target_key == f"slack:{BOUND}:{event['ts']}"
    assert [d.id for d in await rig.deliveries()] == ["ev:Ev0RETRY001"]
    await rig.drain()
    # One status message, threaded under the mention, and one 👀.
    [status] = rig.fake.bot_messages(BOUND)
    assert status.thread_ts == event["ts"]
    assert rig.fake.messages[(BOUND, event["ts"])].reactions == ["eyes"]


async def test_user_not_on_the_allow_list_is_refused_with_the_reason(rig: Rig) -> None:
    slash = await rig.slash("delete the tests", user=MALLORY, channel=BOUND)
    text = await rig.answer(slash)
    assert "not on Handoff's Slack allow-list for `acme/demo`" in text
    [post] = [p for h in rig.fake.hooks.values() for p in h.posts]
    assert post["response_type"] == "ephemeral"
    assert await rig.tasks() == []
    [denied] = await rig.audit("slack:work")
    assert (
        denied.decision == "denied"
        and denied.actor == f"slack:{MALLORY}"
        and "allow-list" in (denied.reason or "")
    )


async def test_mention_by_outsider_gets_an_ephemeral_refusal(rig: Rig) -> None:
    event = rig.slack.mention("delete the tests", user=MALLORY, channel=BOUND)
    assert (await rig.slack.event(event)).status_code == 200
    await rig.handled()
    await rig.drain()
    assert await rig.tasks() == []
    [ephemeral] = rig.fake.ephemerals
    assert ephemeral["user"] == MALLORY and ephemeral["thread_ts"] == event["ts"]
    assert "allow-list" in ephemeral["text"]
    assert rig.fake.bot_messages() == []  # nothing public


async def test_channel_not_bound_says_how_to_fix_it(rig: Rig) -> None:
    text = await rig.answer(await rig.slash("fix the flaky test", user=ALICE, channel=UNBOUND))
    assert "not bound to a repository" in text and "/handoff bind owner/repo" in text
    assert await rig.tasks() == []
    [refused] = await rig.audit("slack:work")
    assert refused.decision == "refused"
    # Naming the repository works from anywhere.
    task = await rig.start(f"{REPO} fix the flaky test", user=ALICE, channel=UNBOUND)
    assert task.repo == REPO and task.instructions == "fix the flaky test"


async def test_user_group_membership_allows(rig: Rig) -> None:
    rig.fake.usergroups["S0BACKEND"] = [BOB]
    task = await rig.start("acme/other --agent short tidy up", user=BOB, channel=UNBOUND)
    assert task.repo == "acme/other" and task.agent == "short" and task.instructions == "tidy up"
    assert rig.fake.of("usergroups.users.list")


async def test_help_renders_the_shared_registry(rig: Rig) -> None:
    from core.handlers import build_registry

    help_ = await rig.slash("help", user=MALLORY)  # static text: answered at once, nothing recorded
    for line in build_registry().help_text("slack").splitlines():
        assert line in help_.ack
    assert "/handoff bind owner/repo" in help_.ack
    assert await rig.tasks() == [] and await rig.deliveries() == []


async def test_status_lists_my_running_tasks(rig: Rig) -> None:
    first = (await rig.start("one", user=ALICE)).id
    second = (await rig.start("two", user=ALICE)).id
    rig.fake.usergroups["S0BACKEND"] = [BOB]
    await rig.start("acme/x three", user=BOB)
    status = await rig.slash("status", user=ALICE)
    assert status.response.content == b""  # a command: no "status follows" acknowledgement
    text = await rig.answer(status)
    assert first in text and second in text and "three" not in text
    assert "no running" in await rig.answer(await rig.slash("status", user=MALLORY))


async def test_bind_is_for_admins_and_then_works(rig: Rig) -> None:
    denied = await rig.answer(await rig.slash("bind acme/web", user=ALICE, channel="C0WEB"))
    assert "only Handoff admins" in denied
    bound = await rig.answer(await rig.slash("bind acme/web", user=ADMIN, channel="C0WEB"))
    assert "acme/web" in bound
    rig.fake.usergroups["S0BACKEND"] = [BOB]
    task = await rig.start("polish", user=BOB, channel="C0WEB")
    assert task.repo == "acme/web"
    # An explicit unbind also overrides a binding from config.
    await rig.answer(await rig.slash("unbind", user=ADMIN, channel=BOUND))
    assert "not bound" in await rig.answer(await rig.slash("x", user=ALICE, channel=BOUND))
    assert [
        (e.action, e.decision)
        for e in await rig.audit()
        if e.action.startswith("slack:") and "bind" in e.action
    ] == [
        ("slack:bind", "denied"),
        ("slack:bind", "allowed"),
        ("slack:unbind", "allowed"),
    ]


async def test_link_buttons_are_acknowledged_and_do_nothing(rig: Rig) -> None:
    response = await rig.slack.click(
        "handoff_view_run", "t_0000000000000000", url="http://handoff.test/tasks/x"
    )
    assert response.status_code == 200
    assert await rig.deliveries() == []


async def test_bot_messages_and_edits_are_ignored(rig: Rig) -> None:
    event = rig.slack.message("hello", channel="D0ALICE")
    for changed in ({"subtype": "message_changed"}, {"bot_id": "B0OTHER"}, {"user": BOT_USER}):
        assert (await rig.slack.event({**event, **changed})).status_code == 200
    assert await rig.tasks() == [] and await rig.deliveries() == []


async def test_ten_commands_at_once_each_become_one_task(rig: Rig) -> None:
    slashes = await asyncio.gather(*(rig.slash(f"task {i}", user=ALICE) for i in range(10)))
    assert all("status follows" in s.ack for s in slashes)
    assert len(await rig.deliveries()) == 10  # recorded before each acknowledgement
    tasks = [await rig.task_of(s) for s in slashes]
    assert sorted(t.instructions for t in tasks) == sorted(f"task {i}" for i in range(10))


def test_signing_helper_matches_slack_sdk() -> None:
    from slack_sdk.signature import SignatureVerifier

    headers = sign(b"payload=1", SIGNING_SECRET, 1_700_000_000)
    verifier = SignatureVerifier(SIGNING_SECRET, clock=type("C", (), {"now": lambda self: 1_700_000_000})())
    assert verifier.is_valid(b"payload=1", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    # Handoff's own check agrees with slack_sdk's, and refuses what it refuses.
    from bot.signature import SlackSignature

    ours = SlackSignature(SIGNING_SECRET, clock=lambda: 1_700_000_000)
    ts, sig = headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    assert ours.valid(b"payload=1", ts, sig)
    assert not ours.valid(b"payload=2", ts, sig) and not ours.valid(b"payload=1", "1699999000", sig)
    assert not ours.valid(b"payload=1", ts, "v0=" + "0" * 64) and not ours.valid(b"payload=1", "-1", sig)


async def test_doctor_checks_the_token_and_the_scopes(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr

    from bot.doctor import check_slack
    from core.checks import Check

    rows = await check_slack(rig.settings)
    assert [(row.name, row.status) for row in rows] == [
        ("slack token", "ok"),
        ("slack scopes", "ok"),
        ("slack socket mode", "ok"),  # the rig sets an app-level token: apps.connections.open
    ]
    monkeypatch.setattr("tests.fakes.slack_api.SCOPES", "chat:write,commands")
    scopes = next(row for row in await check_slack(rig.settings) if row.name == "slack scopes")
    assert scopes.broken and "app_mentions:read" in scopes.detail and "reinstall" in scopes.detail
    wrong = rig.settings.model_copy(update={"slack_bot_token": SecretStr("xoxb-wrong")})
    assert await check_slack(wrong) == [
        Check.fail("slack token", "auth.test failed: invalid_auth — check SLACK_BOT_TOKEN")
    ]
    off = rig.settings.model_copy(update={"slack_bot_token": None})
    assert [row.status for row in await check_slack(off)] == ["off"]
    http_only = rig.settings.model_copy(update={"slack_app_token": None})
    assert (await check_slack(http_only))[-1].status == "off"
    bad = rig.settings.model_copy(update={"slack_app_token": SecretStr("xapp-wrong")})
    last = (await check_slack(bad))[-1]
    assert last.broken and "invalid_auth" in last.detail and "SLACK_APP_TOKEN" in last.detail


async def test_direct_message_needs_a_repository_unless_the_person_has_one(rig: Rig) -> None:
    rig.fake.usergroups["S0BACKEND"] = [BOB]
    vague = rig.slack.message("fix the build", user=BOB, channel="D0BOB")
    await rig.slack.event(vague)
    named = rig.slack.message("fix the build in acme/other", user=BOB, channel="D0BOB")
    await rig.slack.event(named)
    await rig.handled()
    await rig.drain()
    [task] = await rig.tasks()
    assert (
        task.repo == "acme/other"
        and task.instructions == "fix the build"
        and task.requester == f"slack:{BOB}"
    )
    [answer] = [m for m in rig.fake.thread("D0BOB", vague["ts"]) if "Which repository?" in m.text]
    assert "in owner/repo" in answer.text
    # The named one got its status message in its own thread, and 👀.
    assert task.id in str(rig.fake.thread("D0BOB", named["ts"])[0].blocks)
    assert rig.fake.messages[("D0BOB", named["ts"])].reactions == ["eyes"]


async def test_oversized_bodies_are_refused_unread(rig: Rig) -> None:
    big = b"text=" + b"x" * (1024 * 1024)
    assert (await rig.slack.post(big, "application/x-www-form-urlencoded")).status_code == 413

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the cap still holds
        for _ in range(3):
            yield b"y" * (512 * 1024)

    response = await rig.slack.client.post(rig.slack.events_url, content=chunked(), headers=sign(b""))
    assert response.status_code == 413
    assert rig.fake.calls == [] and await rig.tasks() == [] and await rig.deliveries() == []


def _event_body(event: dict[str, object], **envelope: object) -> bytes:
    return json.dumps(
        {"type": "event_callback", "team_id": "T0HANDOFF", "event_id": "Ev0ODD", "event": event, **envelope}
    ).encode()


FORM = "application/x-www-form-urlencoded"
# (body, content type, what a person is told — None: nobody to tell, an empty 200 and a log line)
MALFORMED = [
    (b"command=%2Fhandoff&text=caf%E9&user_id=U1", FORM, "not valid UTF-8"),
    (b"command=/handoff&text=\xe9t\xe9", FORM, "not valid UTF-8"),
    (b"payload=%7Bnot+json", FORM, None),
    (b"payload=%5B1%2C2%5D", FORM, None),
    (b"payload=" + b"%5B" * 5000, FORM, None),
    (b"payload=%7B%22type%22%3A%22block_actions%22%7D", FORM, None),
    (b"nothing=here", FORM, "without a command"),
    (b"command=%2Fdeploy&text=prod", FORM, "not `/deploy`"),
    (b"command=%2Fhandoff&text=a%00b&user_id=U1&channel_id=C1&trigger_id=1.2.x", FORM, "NUL"),
    (b"command=%2Fhandoff&text=fix+it", FORM, "trigger_id, user_id or channel_id is missing"),
    (b"[1, 2, 3]", "application/json", None),
    (b'"just a string"', "application/json", None),
    (b"{not json", "application/json", None),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", None),
    (b'{"type": "event_callback", "event": "x"}', "application/json", None),
    (_event_body({"type": "app_mention", "text": ["a"], "user": "U1"}), "application/json", None),
    (_event_body({"type": "app_mention", "text": "a\u0000b", "user": "U1"}), "application/json", None),
    (b"<xml/>", "text/xml", None),
]
MALFORMED_IDS = [
    "form-not-utf8-percent",
    "form-not-utf8-raw",
    "payload-not-json",
    "payload-json-array",
    "payload-deeply-nested",
    "actions-missing",
    "form-neither",
    "another-command",
    "slash-text-with-nul",
    "slash-ids-missing",
    "json-array",
    "json-string",
    "json-broken",
    "json-deeply-nested",
    "event-not-an-object",
    "event-text-not-a-string",
    "event-text-with-nul",
    "unexpected-content-type",
]


@pytest.mark.parametrize(("body", "content_type", "told"), MALFORMED, ids=MALFORMED_IDS)
async def test_every_malformed_signed_body_gets_a_2xx(
    rig: Rig, body: bytes, content_type: str, told: str | None
) -> None:
    response = await rig.slack.post(body, content_type)
    assert 200 <= response.status_code < 300, response.text
    if told is None:
        assert response.content == b""
    else:
        answer = response.json()
        assert answer["response_type"] == "ephemeral" and told in answer["text"]
    assert await rig.deliveries() == [] and await rig.tasks() == []


@pytest.mark.parametrize(
    "event",
    [
        {"type": "app_home_opened", "user": ALICE, "channel": "D0ALICE", "tab": "messages"},
        {"type": "reaction_added", "user": ALICE, "reaction": "eyes", "item": {"type": "message"}},
        {"type": "member_joined_channel", "user": ALICE, "channel": BOUND},
        {"type": "message", "subtype": "message_changed", "channel": BOUND, "hidden": True},
        {"type": "message", "user": ALICE, "text": "lunch?", "channel": BOUND, "ts": "1.1"},
    ],
    ids=["app-home-opened", "reaction-added", "member-joined", "message-edit", "channel-chatter"],
)
async def test_events_handoff_does_not_handle_are_acknowledged_and_dropped(
    rig: Rig, event: dict[str, object]
) -> None:
    response = await rig.slack.event(event)
    assert response.status_code == 200 and response.content == b""
    assert await rig.deliveries() == []


async def test_a_thread_reply_outside_task_threads_is_not_recorded(rig: Rig) -> None:
    parent = rig.fake.user_message(BOUND, BOB, "standup?")
    reply = rig.slack.message("here", user=ALICE, channel=BOUND, channel_type="channel", thread_ts=parent.ts)
    assert (await rig.slack.event(reply)).status_code == 200
    assert await rig.deliveries() == []


async def test_while_redis_is_down_a_command_is_told_to_try_again_and_never_starts(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.errors import QueueUnavailable

    async def down(jobs: object) -> list[bool]:
        raise QueueUnavailable("redis unavailable: connection refused")

    monkeypatch.setattr(rig.bot.ingress.jobs, "_flush", down)
    slash = await rig.slash("fix the flaky test", user=ALICE, channel=BOUND)
    assert "could not take this right now (redis unavailable)" in slash.ack
    event = await rig.slack.event(rig.slack.mention("fix it", user=ALICE, channel=BOUND))
    assert event.status_code == 503  # Slack retries an event; it never retries a command
    monkeypatch.undo()
    # The command's row is closed, so the sweep that re-queues lost jobs never starts it later.
    rows = {d.event: d for d in await rig.deliveries()}
    assert rows["slash_command"].outcome == "dropped: redis unavailable"
    assert rows["app_mention"].outcome == "received"
    assert await rig.bot.sweep.reconcile() == 0  # too recent to count as lost
