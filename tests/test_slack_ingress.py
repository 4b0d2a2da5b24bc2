"""Slack ingress through the real bolt app and HTTP: signatures, dedupe, the allow-list, commands.

Requests are built from Slack's documented payload shapes and signed with the v0 scheme; tasks are
created and queued for real (PostgreSQL/SQLite, Redis) but no worker runs here.
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
from tests.test_slack_support import (
    ADMIN,
    ALICE,
    BOB,
    BOUND,
    MALLORY,
    REPO,
    UNBOUND,
    Rig,
    slack_rig,
    task_id_in,
)


@pytest.fixture
async def rig(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with slack_rig(settings, tmp_path) as r:
        yield r


async def test_slash_command_in_bound_channel_creates_a_task_before_the_ack(rig: Rig) -> None:
    response = await rig.slack.slash("add a CHANGELOG entry", user=ALICE, channel=BOUND)
    assert response.status_code == 200
    text = response.json()["text"]
    assert "queued" in text
    task = await rig.task(task_id_in(text))
    # Recorded before the acknowledgement went out, with the right people and places.
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
    assert delivery.id.startswith("cmd:") and delivery.task_id == task.id
    assert [e.decision for e in await rig.audit("create")] == ["allowed"]


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
    response = await rig.slack.slash("delete the tests", user=MALLORY, channel=BOUND)
    text = response.json()["text"]
    assert "not on Handoff's Slack allow-list for `acme/demo`" in text
    assert response.json().get("response_type", "ephemeral") == "ephemeral"
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
    await rig.drain()
    assert await rig.tasks() == []
    [ephemeral] = rig.fake.ephemerals
    assert ephemeral["user"] == MALLORY and ephemeral["thread_ts"] == event["ts"]
    assert "allow-list" in ephemeral["text"]
    assert rig.fake.bot_messages() == []  # nothing public


async def test_channel_not_bound_says_how_to_fix_it(rig: Rig) -> None:
    response = await rig.slack.slash("fix the flaky test", user=ALICE, channel=UNBOUND)
    text = response.json()["text"]
    assert "not bound to a repository" in text and "/handoff bind owner/repo" in text
    assert await rig.tasks() == []
    [refused] = await rig.audit("slack:work")
    assert refused.decision == "refused"
    # Naming the repository works from anywhere.
    named = await rig.slack.slash(f"{REPO} fix the flaky test", user=ALICE, channel=UNBOUND)
    task = await rig.task(task_id_in(named.json()["text"]))
    assert task.repo == REPO and task.instructions == "fix the flaky test"


async def test_user_group_membership_allows(rig: Rig) -> None:
    rig.fake.usergroups["S0BACKEND"] = [BOB]
    response = await rig.slack.slash("acme/other --agent short tidy up", user=BOB, channel=UNBOUND)
    task = await rig.task(task_id_in(response.json()["text"]))
    assert task.repo == "acme/other" and task.agent == "short" and task.instructions == "tidy up"
    assert rig.fake.of("usergroups.users.list")


async def test_help_renders_the_shared_registry(rig: Rig) -> None:
    from core.handlers import build_registry

    text = (await rig.slack.slash("help", user=MALLORY)).json()["text"]
    for line in build_registry().help_text("slack").splitlines():
        assert line in text
    assert "/handoff bind owner/repo" in text
    assert await rig.tasks() == []


async def test_status_lists_my_running_tasks(rig: Rig) -> None:
    first = task_id_in((await rig.slack.slash("one", user=ALICE)).json()["text"])
    second = task_id_in((await rig.slack.slash("two", user=ALICE)).json()["text"])
    rig.fake.usergroups["S0BACKEND"] = [BOB]
    await rig.slack.slash("acme/x three", user=BOB)
    text = (await rig.slack.slash("status", user=ALICE)).json()["text"]
    assert first in text and second in text and "three" not in text
    assert "no running" in (await rig.slack.slash("status", user=MALLORY)).json()["text"]


async def test_bind_is_for_admins_and_then_works(rig: Rig) -> None:
    denied = (await rig.slack.slash("bind acme/web", user=ALICE, channel="C0WEB")).json()["text"]
    assert "only Handoff admins" in denied
    bound = (await rig.slack.slash("bind acme/web", user=ADMIN, channel="C0WEB")).json()["text"]
    assert "acme/web" in bound
    rig.fake.usergroups["S0BACKEND"] = [BOB]
    task = await rig.task(
        task_id_in((await rig.slack.slash("polish", user=BOB, channel="C0WEB")).json()["text"])
    )
    assert task.repo == "acme/web"
    # An explicit unbind also overrides a binding from config.
    await rig.slack.slash("unbind", user=ADMIN, channel=BOUND)
    assert "not bound" in (await rig.slack.slash("x", user=ALICE, channel=BOUND)).json()["text"]
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


async def test_ack_is_fast(rig: Rig) -> None:
    await rig.slack.slash("help")  # warm up: bolt's one-time auth.test
    start = time.perf_counter()
    responses = await asyncio.gather(*(rig.slack.slash(f"task {i}", user=ALICE) for i in range(10)))
    elapsed = time.perf_counter() - start
    assert all(r.status_code == 200 for r in responses)
    assert len(await rig.tasks()) == 10
    assert elapsed < 2.5, elapsed


def test_signing_helper_matches_slack_sdk() -> None:
    from slack_sdk.signature import SignatureVerifier

    headers = sign(b"payload=1", SIGNING_SECRET, 1_700_000_000)
    verifier = SignatureVerifier(SIGNING_SECRET, clock=type("C", (), {"now": lambda self: 1_700_000_000})())
    assert verifier.is_valid(b"payload=1", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])


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


async def test_work_past_the_ack_budget_is_answered_through_response_url(rig: Rig) -> None:
    rig.bot.budget.budget_s = 0.0  # as if the database were slow: the ack cannot wait for the work
    response = await rig.slack.slash("slow one", user=ALICE, channel=BOUND)
    assert "Working on it" in response.json()["text"]
    await rig.bot.budget.drain()
    [task] = await rig.tasks()  # the work went on after the ack
    await rig.drain()
    [posted] = [p for hook in rig.fake.hooks.values() for p in hook.posts]
    assert task.id in posted["text"] and posted["response_type"] == "ephemeral"


async def test_direct_message_needs_a_repository_unless_the_person_has_one(rig: Rig) -> None:
    rig.fake.usergroups["S0BACKEND"] = [BOB]
    vague = rig.slack.message("fix the build", user=BOB, channel="D0BOB")
    await rig.slack.event(vague)
    named = rig.slack.message("fix the build in acme/other", user=BOB, channel="D0BOB")
    await rig.slack.event(named)
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
