"""Every Slack entry point end to end: signed request → bolt → task → arq worker → Docker sandbox →
git push → outbox sender → the fake Slack's threads, status messages, reactions and buttons.
"""

from __future__ import annotations

from pathlib import Path

from bot.blocks import escape
from bot.messages import CANCEL, RETRY
from core.models import RunEvent
from core.settings import Settings
from tests.fakes.slack_api import Message
from tests.support.env import git
from tests.support.slack import ALICE, BOUND, MALLORY, REPO, Rig, make_repo, slack_rig
from tests.support.waiting import wait_until


def texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages]


def flat(message: Message) -> str:
    """Every text in a message's blocks, joined."""
    parts = [message.text]
    for block in message.blocks or []:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts.extend(
            e.get("text", "") if isinstance(e.get("text"), str) else e.get("text", {}).get("text", "")
            for e in block.get("elements", [])
        )
    return "\n".join(parts)


def button_ids(message: Message) -> list[str]:
    return [e["action_id"] for b in message.blocks or [] if b["type"] == "actions" for e in b["elements"]]


def assert_clean(rig: Rig) -> None:
    """Slack never rejected a call and every thread reply hung off a real parent."""
    rejected = [(c.method, c.response.get("error")) for c in rig.fake.calls if not c.response.get("ok")]
    assert rejected == [], rejected
    assert rig.fake.violations == []


async def test_slash_command_end_to_end(settings: Settings, tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "git")
    async with slack_rig(settings, tmp_path, worker=True) as rig:
        task_id = (await rig.start("echo hi > NOTES.md", user=ALICE, channel=BOUND)).id
        done = await rig.wait_task(task_id, {"succeeded", "failed"})
        assert done.state == "succeeded", done.state_reason
        await rig.settled()
        # The status message is the thread's parent in the channel, edited in place to the end state.
        [status] = [m for m in rig.fake.bot_messages(BOUND) if m.thread_ts is None]
        assert "Succeeded" in flat(status) and task_id in flat(status)
        assert status.edits >= 1
        assert button_ids(status) == [RETRY, "handoff_open_pr", "handoff_view_run"]
        thread = texts(rig.fake.thread(BOUND, status.ts))
        assert thread[0].startswith(":arrow_forward: Started")
        assert any("Pull request opened" in t and "/pull/7" in t for t in thread)
        assert "Finished" in thread[-1]
        # A reply in that thread is a follow-up on the same branch.
        follow = rig.slack.message(
            "echo more >> NOTES.md", user=ALICE, channel=BOUND, channel_type="channel", thread_ts=status.ts
        )
        assert (await rig.slack.event(follow)).status_code == 200
        await wait_until(lambda: _attempts(rig, task_id, 2), timeout=30)
        done = await rig.wait_task(task_id, {"succeeded", "failed"})
        assert done.state == "succeeded"
        await rig.settled()
        assert any("follow-up" in t for t in texts(rig.fake.thread(BOUND, status.ts)))
        assert_clean(rig)
    notes = git("--git-dir", str(bare), "show", f"handoff/{task_id}:NOTES.md")
    assert notes.splitlines() == ["hi", "more"]


async def _attempts(rig: Rig, task_id: str, n: int) -> bool:
    return (await rig.task(task_id)).attempts >= n


async def test_mention_end_to_end(settings: Settings, tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "git")
    async with slack_rig(settings, tmp_path, worker=True) as rig:
        event = rig.slack.mention("echo hi > MENTION.md", user=ALICE, channel=BOUND)
        assert (await rig.slack.event(event)).status_code == 200
        await rig.handled()
        [task] = await rig.tasks()
        await rig.wait_task(task.id, {"succeeded"})
        await rig.settled()
        thread = rig.fake.thread(BOUND, event["ts"])
        # First reply: the status message (edited); then the milestones.
        assert "Succeeded" in flat(thread[0]) and thread[0].edits >= 1
        assert any("Started" in t for t in texts(thread)) and "Finished" in thread[-1].text
        assert rig.fake.messages[(BOUND, event["ts"])].reactions == ["eyes", "white_check_mark"]
        assert_clean(rig)
    # Slack sent "echo hi &gt; MENTION.md": the agent got the ">" the person typed.
    assert task.instructions == "echo hi > MENTION.md"
    assert git("--git-dir", str(bare), "show", f"handoff/{task.id}:MENTION.md") == "hi"


async def test_direct_message_end_to_end(settings: Settings, tmp_path: Path) -> None:
    make_repo(tmp_path / "git")
    async with slack_rig(settings, tmp_path, worker=True) as rig:
        # Alice is listed for exactly one repository, so a DM needs no "in owner/repo".
        event = rig.slack.message("echo hi > DM.md", user=ALICE, channel="D0ALICE")
        assert (await rig.slack.event(event)).status_code == 200
        await rig.handled()
        [task] = await rig.tasks()
        assert task.repo == REPO and task.links["slack"]["kind"] == "dm"
        await rig.wait_task(task.id, {"succeeded"})
        await rig.settled()
        thread = rig.fake.thread("D0ALICE", event["ts"])
        assert "Succeeded" in flat(thread[0])
        assert_clean(rig)


async def test_buttons_and_thread_commands_cancel_and_retry(settings: Settings, tmp_path: Path) -> None:
    make_repo(tmp_path / "git")
    async with slack_rig(settings, tmp_path, worker=True) as rig:
        task_id = (await rig.start("sleep 30", user=ALICE, channel=BOUND)).id
        await rig.wait_task(task_id, {"running"})
        status = await wait_until(lambda: [m for m in rig.fake.bot_messages(BOUND) if m.thread_ts is None])
        parent = status[0]
        # Someone not allowed presses Cancel: refused, the task keeps running.
        await rig.slack.click(CANCEL, task_id, user=MALLORY, channel=BOUND, message_ts=parent.ts)
        # `status` in the thread answers privately.
        await rig.slack.event(
            rig.slack.message(
                "status", user=MALLORY, channel=BOUND, channel_type="channel", thread_ts=parent.ts
            )
        )
        # An outsider's follow-up in the thread is refused, privately, and not queued.
        await rig.slack.event(
            rig.slack.message(
                "also drop the prod database",
                user=MALLORY,
                channel=BOUND,
                channel_type="channel",
                thread_ts=parent.ts,
            )
        )
        running = await rig.task(task_id)
        assert running.state == "running" and running.followups == []
        # The requester presses Cancel.
        await rig.slack.click(CANCEL, task_id, user=ALICE, channel=BOUND, message_ts=parent.ts)
        cancelled = await rig.wait_task(task_id, {"cancelled"}, timeout=15)
        assert "alice" in (cancelled.state_reason or "") or cancelled.state == "cancelled"
        await rig.settled()
        posts = [p["text"] for h in rig.fake.hooks.values() for p in h.posts]
        assert any("Only the requester" in p for p in posts) and any("Cancelling" in p for p in posts)
        assert any("is *running*" in e["text"] for e in rig.fake.ephemerals)
        assert any("allow-list" in e["text"] and e["user"] == MALLORY for e in rig.fake.ephemerals)
        assert "Cancelled" in flat(rig.fake.messages[(BOUND, parent.ts)])
        # Retry from the button; this time let it finish quickly by retrying a fast command.
        await rig.slack.click(RETRY, task_id, user=ALICE, channel=BOUND, message_ts=parent.ts)
        await rig.wait_task(task_id, {"running", "succeeded"})
        await rig.slack.event(
            rig.slack.message(
                "cancel", user=ALICE, channel=BOUND, channel_type="channel", thread_ts=parent.ts
            )
        )
        await rig.wait_task(task_id, {"cancelled"}, timeout=15)
        await rig.settled()
        assert (await rig.task(task_id)).attempts == 2
        [refused] = await rig.audit("slack:cancel")
        assert (
            refused.actor == f"slack:{MALLORY}"
            and refused.decision == "refused"
            and refused.task_id == task_id
        )
        assert [d.outcome for d in await rig.deliveries() if d.id.startswith("act:")] == [
            "refused",
            "ok",
            "ok",
        ]
        assert_clean(rig)


async def test_long_instructions_and_a_10000_line_log_stay_within_limits(
    settings: Settings, tmp_path: Path
) -> None:
    make_repo(tmp_path / "git")
    script = (
        "seq 1 10000; head -c 20000 /dev/zero | tr '\\0' 'x'; echo; "
        "echo '<!channel> & <@U01ALICE> ```'; echo token=xoxb-1234567890-abcdefghij; exit 3 # "
    )
    instructions = script + "padding " * ((5000 - len(script)) // 8 + 1)
    assert len(instructions) >= 5000
    async with slack_rig(settings, tmp_path, worker=True) as rig:
        task_id = (await rig.start(instructions, user=ALICE, channel=BOUND)).id
        done = await rig.wait_task(task_id, {"failed"})
        assert "code 3" in (done.state_reason or "")
        await rig.settled()
        assert_clean(rig)
        [parent] = [m for m in rig.fake.bot_messages(BOUND) if m.thread_ts is None]
        failure = rig.fake.thread(BOUND, parent.ts)[-1]
        assert failure.broadcast and "exited with code 3" in failure.text
        body = flat(failure)
        # The reply carries the tail of the stored log (the end, not the start of 10,000 lines).
        logs = sorted((e for e in await rig.rows(RunEvent) if e.type == "log"), key=lambda e: e.seq)
        assert len(logs) >= 10_000  # every line of the agent's output was stored
        shown = [escape(e.data["text"]).replace("```", "'''")[:100] for e in logs[-20:]]
        assert all(line in body for line in shown) and "\n1\n" not in body
        # Escaped, never a live @channel (the instructions hold it for sure; the log tail may too).
        assert "&lt;!channel&gt; &amp;" in flat(parent) and "<!channel>" not in body + flat(parent)
        for message in rig.fake.bot_messages():
            assert len(message.blocks or []) <= 50
            assert len(message.text) <= 40_000
            assert "xoxb-1234567890" not in flat(message)  # secrets masked, in instructions and output
        assert "token=[REDACTED]" in flat(parent)
        # The 5,000-character instructions were clipped in the status message, not rejected.
        quoted = parent.blocks[1]["text"]["text"] if parent.blocks else ""
        assert quoted.startswith("> seq 1 10000") and quoted.endswith("…") and len(quoted) < 3000
