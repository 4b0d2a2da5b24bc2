"""Reading a request's text, and the outbox messages that answer the person who sent it."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from bot.operations import Ephemeral, React, Respond, ThreadReply
from core.commands import Reply
from core.outbox import OutboxMessage

_OPTIONS = r"(?P<opts>(?:\s*--(?:model|agent|base)\s+\S+)*)"
_REPO = r"(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)"
_LEADING_REPO = re.compile(_OPTIONS + r"\s*" + _REPO + r"(?:\s+|$)(?P<rest>.*)$", re.S)
_TRAILING_REPO = re.compile(r"^(?P<rest>.*?)\s+in\s+" + _REPO + r"\s*\.?\s*$", re.S)
TASK_ID = re.compile(r"^t_[0-9a-f]{16}$")


@dataclass(frozen=True)
class Answer:
    """What to tell the person (in a slash command's acknowledgement, or through the outbox)."""

    text: str | None = None
    task_id: str | None = None
    # Recorded on the Delivery row: what the request led to.
    outcome: str = "ignored"
    # Said in the open (a thread reply) rather than to the person alone.
    public: bool = False


SILENT = Answer()


def from_reply(reply: Reply) -> Answer:
    """A core reply as an answer: refusals and status are private, receipts public."""
    public = reply.ok and not reply.private and reply.task_id is not None
    return Answer(reply.text, reply.task_id, outcome="ok" if reply.ok else "refused", public=public)


def split_repo(text: str, *, trailing: bool = False) -> tuple[str | None, str]:
    """``[--opts] owner/repo rest`` or (``trailing``) ``rest in owner/repo`` → ``(repo, text)``."""
    match = _LEADING_REPO.match(text)
    if match:
        return match["repo"], f"{match['opts'].strip()} {match['rest'].strip()}".strip()
    if trailing:
        match = _TRAILING_REPO.match(text)
        if match:
            return match["repo"], match["rest"].strip()
    return None, text.strip()


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """The text of an ``@Handoff ...`` message without the mention of the bot."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    return text.strip()


def in_thread(event: dict[str, Any], delivery: str, answer: Answer) -> OutboxMessage:
    """Answer an event in its thread: a reply when public, else ephemeral to its author."""
    channel, ts = str(event.get("channel", "")), str(event.get("ts", ""))
    thread = str(event.get("thread_ts") or ts)
    text = answer.text or ""
    op: ThreadReply | Ephemeral
    if answer.public:
        op = ThreadReply(task_id=answer.task_id, channel=channel, thread_ts=thread, text=text)
    else:
        op = Ephemeral(channel=channel, user=str(event.get("user") or ""), thread_ts=thread, text=text)
    return OutboxMessage(f"slack:answer:{channel}", "append", op, f"slack:answer:{delivery}")


def via_response_url(body: dict[str, Any], answer: Answer) -> OutboxMessage:
    """Answer a slash command or button later, through its ``response_url``."""
    user = str(body.get("user_id") or (body.get("user") or {}).get("id") or "")
    channel = str(body.get("channel_id") or (body.get("channel") or {}).get("id") or "")
    respond = Respond(
        response_url=body.get("response_url"),
        issued_at=time.time(),
        user=user,
        channel=channel,
        private=True,
        text=answer.text or "",
    )
    key = body.get("trigger_id") or f"{user}:{time.time()}"
    return OutboxMessage(f"slack:respond:{user}", "append", respond, f"slack:respond:{key}")


def reaction(channel: str, ts: str, name: str, delivery: str) -> OutboxMessage:
    """A reaction on the message that asked (👀 when a task starts from it)."""
    return OutboxMessage(
        f"slack:react:{channel}:{ts}",
        "append",
        # An acknowledgement: sent ahead of other tasks' progress (its bucket is Slack's reactions).
        React(channel=channel, ts=ts, name=name, ack=True),
        idempotency_key=f"slack:react:{name}:{delivery}",
    )
