"""Reporting to Slack through the outbox: 429 storms, coalescing, expired response URLs, lost
messages and channels the bot is not in — against the fake Web API, through the real sender.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from bot.answers import Answer
from core.models import ExternalRef, Outbox, Task
from core.settings import Settings
from jobs.outbox import OutboxSender
from tests.fakes.slack_api import BOT_USER
from tests.support.slack import ALICE, BOUND, Rig, slack_rig


@pytest.fixture
async def rig(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with slack_rig(settings, tmp_path) as r:
        yield r


async def _slash_task(rig: Rig, text: str = "echo hi") -> Task:
    return await rig.start(text, user=ALICE, channel=BOUND)


async def _progress(rig: Rig, task: Task, steps: range) -> None:
    """A chatty agent: one transaction per event, as a slow stream would arrive."""
    for i in steps:
        async with rig.services.sessions.begin() as session:
            fresh = await session.get(Task, task.id)
            assert fresh is not None
            await rig.services.journal.append_event(session, fresh, None, "progress", {"step": f"step {i}"})


async def test_429_storm_on_chat_update_is_honoured_and_coalesced(rig: Rig) -> None:
    task = await _slash_task(rig)
    await rig.drain()
    [status] = rig.fake.bot_messages(BOUND)
    rig.fake.fail("chat.update", status=429, retry_after=1, times=3)
    sender = OutboxSender(rig.services.sessions, [rig.bot.notifier], rig.services.config.outbox)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    start = time.monotonic()
    try:
        await _progress(rig, task, range(200))
        while True:
            rows = await rig.rows(Outbox)
            done = all(r.state != "pending" for r in rows)
            if done and rig.fake.messages[(BOUND, status.ts)].edits >= 1:
                break
            assert time.monotonic() - start < 20, [
                (r.key, r.state, r.last_error) for r in rows if r.state == "pending"
            ]
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    updates = rig.fake.of("chat.update")
    assert [c.status for c in updates[:3]] == [429, 429, 429]
    assert all(c.status == 200 for c in updates[3:])
    # 200 events cost a handful of calls: one rejected try per Retry-After, then the latest state.
    assert len(updates) <= 6, len(updates)
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
    assert all(gap >= 0.9 for gap in gaps), gaps  # Retry-After: 1, and at most one edit per second
    assert "step 199" in str(rig.fake.messages[(BOUND, status.ts)].blocks)
    assert {r.state for r in await rig.rows(Outbox)} <= {"sent", "superseded"}


async def test_expired_response_url_falls_back_to_a_dm(rig: Rig) -> None:
    body = {
        "user_id": ALICE,
        "channel_id": BOUND,
        "trigger_id": "1.2.x",
        "response_url": rig.fake.response_url(expired=True),
    }
    await rig.bot.intake.respond(body, Answer("Cancelling task `t_x`."))
    await rig.drain()
    [dm] = rig.fake.bot_messages("D01ALICE")
    assert dm.text == "Cancelling task `t_x`."
    assert all(not hook.posts for hook in rig.fake.hooks.values())


async def test_fresh_response_url_is_used(rig: Rig) -> None:
    url = rig.fake.response_url()
    await rig.bot.intake.respond(
        {"user_id": ALICE, "trigger_id": "1.3.y", "response_url": url}, Answer("done")
    )
    await rig.drain()
    [hook] = [h for h in rig.fake.hooks.values() if h.posts]
    assert hook.posts[0]["text"] == "done" and hook.posts[0]["response_type"] == "ephemeral"
    assert rig.fake.of("chat.postMessage") == []


async def test_response_url_pointing_elsewhere_is_not_called(rig: Rig) -> None:
    body = {"user_id": ALICE, "trigger_id": "1.4.z", "response_url": "http://169.254.169.254/latest"}
    await rig.bot.intake.respond(body, Answer("hello"))
    await rig.drain()
    assert [m.text for m in rig.fake.bot_messages("D01ALICE")] == ["hello"]


async def test_deleted_status_message_is_posted_again(rig: Rig) -> None:
    task = await _slash_task(rig)
    await rig.drain()
    [first] = rig.fake.bot_messages(BOUND)
    del rig.fake.messages[(BOUND, first.ts)]  # someone deleted it
    await _progress(rig, task, range(1))
    await rig.drain()
    [second] = rig.fake.bot_messages(BOUND)
    assert second.ts != first.ts and "step 0" in str(second.blocks)
    [ref] = await rig.rows(ExternalRef, ExternalRef.key == f"slack:status:{task.id}")
    assert ref.ref["ts"] == second.ts
    # The new thread maps to the task too.
    assert await rig.bot.store.thread_task(BOUND, second.ts) == task.id


async def test_channel_the_bot_is_not_in_is_joined(rig: Rig) -> None:
    rig.fake.not_in_channel.add(BOUND)
    await _slash_task(rig)
    await rig.drain()
    assert [c.method for c in rig.fake.calls if c.method != "auth.test"][:3] == [
        "chat.postMessage",
        "conversations.join",
        "chat.postMessage",
    ]
    assert len(rig.fake.bot_messages(BOUND)) == 1


async def test_unreachable_channel_falls_back_to_the_requesters_dm(rig: Rig) -> None:
    rig.fake.fail("chat.postMessage", error="channel_not_found")
    task = await _slash_task(rig)
    await rig.drain()
    [status] = rig.fake.bot_messages("D01ALICE")
    assert task.id in str(status.blocks)
    assert await rig.bot.store.thread_task("D01ALICE", status.ts) == task.id


async def test_server_errors_retry_and_auth_errors_give_up(rig: Rig) -> None:
    rig.fake.fail("chat.postMessage", status=500, times=2)
    await _slash_task(rig)
    rows = await rig.drain()
    assert [r.state for r in rows] == ["sent"] and rows[0].attempts == 3
    rig.fake.fail("chat.update", error="invalid_auth")
    task = (await rig.tasks())[0]
    await _progress(rig, task, range(1))
    rows = await rig.drain()
    assert rows[-1].state == "failed" and "invalid_auth" in (rows[-1].last_error or "")


async def test_reactions_are_idempotent(rig: Rig) -> None:
    event = rig.slack.mention("do it", user=ALICE, channel=BOUND)
    rig.fake.messages[(BOUND, event["ts"])].reactions.append("eyes")  # an earlier attempt got through
    await rig.slack.event(event)
    await rig.handled()
    rows = await rig.drain()
    assert all(r.state == "sent" for r in rows)
    assert rig.fake.messages[(BOUND, event["ts"])].reactions == ["eyes"]
    assert all(m.user == BOT_USER for m in rig.fake.bot_messages())


async def test_task_started_elsewhere_is_announced_in_the_bound_channel(rig: Rig) -> None:
    from core.models import TaskSource
    from core.tasks import NewTask

    task, _ = await rig.services.tasks.create(
        NewTask(
            repo="acme/demo",
            instructions="from an issue",
            source=TaskSource.github_issue,
            requester="octocat",
        )
    )
    other, _ = await rig.services.tasks.create(
        NewTask(repo="acme/unbound", instructions="x", requester="octocat")
    )
    await rig.drain()
    [announced] = rig.fake.bot_messages(BOUND)
    assert (
        announced.thread_ts is None
        and task.id in str(announced.blocks)
        and "octocat" in str(announced.blocks)
    )
    assert other.id not in str([m.blocks for m in rig.fake.bot_messages()])
