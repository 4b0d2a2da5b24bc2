"""Outbox contracts: how state changes become notifications, and how notifications are delivered.

A :class:`Reporter` looks at each recorded event (in the transaction that records it) and returns
:class:`OutboxMessage` s; the journal writes them as ``Outbox`` rows in that same transaction, so a
notification exists exactly when its cause does. A :class:`Notifier` (one per channel: ``github``,
``slack``, ``webhook``) delivers rows; the sender in ``jobs/outbox.py`` calls it with retries,
backoff, coalescing and per-target rate limits.

Two kinds of message:

* ``upsert`` — the desired *state* of one remote object (a check run, a tracking comment, a Slack
  status message), identified by ``key``. Pending upserts for one key coalesce: only the latest is
  sent. The notifier creates the object the first time (recording its remote id with
  :meth:`DeliveryContext.remember`) and edits it afterwards.
* ``append`` — a one-off write (a thread reply, a reaction). Never coalesced; sent once each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from core.models import Outbox, RunEvent, Task

MessageKind = Literal["upsert", "append"]


@dataclass(frozen=True)
class OutboxMessage:
    """A notification to write in the current transaction."""

    channel: str
    key: str
    kind: MessageKind
    payload: dict[str, Any]
    # Unique across all rows: the same cause never yields two rows (a replayed transaction is a no-op).
    idempotency_key: str | None = None


class Reporter(Protocol):
    """Turns one event of a task into outbox messages (pure: no I/O)."""

    def messages(self, task: Task, event: RunEvent) -> list[OutboxMessage]:
        """The notifications caused by ``event`` (may be empty)."""
        ...


class RetryLater(Exception):
    """The target asked us to wait (429/403 with ``Retry-After``, 5xx, timeout).

    ``scope`` widens the pause beyond this row: ``"key"`` (this object), ``"bucket"`` (every row of
    the same rate bucket, e.g. one GitHub installation) or ``"channel"``.
    """

    def __init__(self, reason: str, after_s: float | None = None, scope: str = "key") -> None:
        super().__init__(reason)
        self.reason = reason
        self.after_s = after_s
        self.scope = scope


class GiveUp(Exception):
    """The write can never succeed (e.g. 404 on a deleted comment, 422 invalid); stop retrying."""


class DeliveryContext(Protocol):
    """What a notifier may read and record while delivering one row."""

    async def recall(self, key: str) -> dict[str, Any] | None:
        """The remote reference remembered for ``key`` (e.g. ``{"id": 123}``), if any."""
        ...

    async def remember(self, key: str, ref: dict[str, Any]) -> None:
        """Durably remember the remote reference of ``key`` right after creating it."""
        ...


@dataclass(frozen=True)
class RateRule:
    """At most one write per ``interval_s`` for rows sharing ``bucket``, after a burst of ``burst``.

    A token bucket: ``burst`` writes may go at once, then one per ``interval_s`` (``burst=1`` is a
    plain minimum gap); a rule with a ``reserve`` writes only while more than that many tokens are
    left, which keeps them for rules without one (acknowledgements). ``per_object`` marks the
    pacing of one remote object (a check run, a Slack message): an urgent row (a state change) may
    skip it, never a rule that protects a whole installation or workspace.
    """

    bucket: str
    interval_s: float
    per_object: bool = False
    burst: int = 1
    reserve: int = 0


def is_first(event: RunEvent) -> bool:
    """Whether ``event`` is a task's very first (its ``queued`` or ``waiting`` status at creation):
    reporters mark what it causes as acknowledgements (``payload["ack"]``)."""
    return event.type == "status" and event.run_id is None and "from" not in event.data


def is_ack(row: Outbox) -> bool:
    """Whether ``row`` is the first feedback on a new request (a 👀, the queued check run, the
    Slack status message): notifiers send those in a lane of their own, ahead of progress writes."""
    return bool(row.payload.get("ack"))


@dataclass
class Delivered:
    """What a successful delivery produced (stored on the row for audit)."""

    ref: dict[str, Any] = field(default_factory=dict)


class Notifier(Protocol):
    """Delivers rows of one channel."""

    channel: str

    def rate_rules(self, row: Outbox) -> list[RateRule]:
        """The rate limits that apply to ``row`` (per object, per installation, ...)."""
        ...

    async def deliver(self, row: Outbox, ctx: DeliveryContext) -> Delivered:
        """Make the remote side match ``row``; raise :class:`RetryLater` or :class:`GiveUp`."""
        ...
