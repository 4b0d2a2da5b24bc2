"""What a ``slack`` outbox row asks for: one discriminated union, shared by writers and the notifier.

Writers — the reporter (status message, milestones) and the intake's answers (replies, ephemeral
messages, ``response_url`` answers, reactions) — build these; :class:`~bot.delivery.SlackNotifier`
reads them back with :data:`OPERATIONS`. A new kind of write is a new member here and a branch in
the notifier.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from core.outbox import Operation, Operations

CHANNEL = "slack"


class _SlackOperation(Operation):
    CHANNEL: ClassVar[str] = CHANNEL


class Status(_SlackOperation):
    """Post the task's status message once, then keep it up to date (rendered at send time)."""

    op: Literal["status"] = "status"
    task_id: str
    channel: str
    thread_ts: str | None = None
    # Who asked: a DM to them when the channel cannot be posted in.
    user: str | None = None
    seq: int = 0


class ThreadReply(_SlackOperation):
    """A reply in the task's thread (a milestone, or an answer said in the open)."""

    op: Literal["reply"] = "reply"
    task_id: str | None = None
    channel: str
    thread_ts: str | None = None
    text: str
    # Also shown in the channel (a failure).
    broadcast: bool = False
    # Append this many of the run's last log lines.
    log_tail: int = 0
    # A milestone waits for the status message, which must head the thread.
    after_status: bool = False


class React(_SlackOperation):
    """A reaction on a message (👀 on the one that started a task, ✅ or ❌ when it ends)."""

    op: Literal["react"] = "react"
    channel: str
    ts: str
    name: str


class Ephemeral(_SlackOperation):
    """A message only ``user`` sees (``chat.postEphemeral``; a DM when that is impossible)."""

    op: Literal["ephemeral"] = "ephemeral"
    channel: str
    user: str
    thread_ts: str | None = None
    text: str


class Respond(_SlackOperation):
    """An answer through a slash command's or a button's ``response_url`` (a DM once it expired)."""

    op: Literal["respond"] = "respond"
    response_url: str | None = None
    # When the URL was issued (epoch seconds): it expires after 30 minutes.
    issued_at: float = 0.0
    user: str
    channel: str = ""
    private: bool = True
    text: str


SlackOperation = Annotated[Status | ThreadReply | React | Ephemeral | Respond, Field(discriminator="op")]
OPERATIONS: Operations[Status | ThreadReply | React | Ephemeral | Respond] = Operations(
    CHANNEL, SlackOperation
)
