"""Outbox contracts: how state changes become notifications, and how notifications are delivered.

A :class:`Reporter` looks at each recorded event (in the transaction that records it) and returns
:class:`OutboxMessage` s; the journal writes them as ``Outbox`` rows in that same transaction, so a
notification exists exactly when its cause does. A :class:`Notifier` (one per channel: ``github``,
``slack``, ``webhook``) delivers rows; the sender in ``jobs/outbox.py`` calls it with retries,
backoff, coalescing and per-target rate limits.

What a row asks for is an :class:`Operation`: each channel declares the union of its operations
once (``github_app/operations.py``, ``bot/operations.py``, ``jobs/webhook.py``), its writers build
them and its notifier reads them back with :class:`Operations` — never a payload dict read by key.
:func:`outbox_rows` / :func:`write_messages` are the one place a message becomes a row.

Two kinds of message:

* ``upsert`` — the desired *state* of one remote object (a check run, a tracking comment, a Slack
  status message), identified by ``key``. Pending upserts for one key coalesce: only the latest is
  sent. The notifier creates the object the first time (recording its remote id with
  :meth:`DeliveryContext.remember`) and edits it afterwards.
* ``append`` — a one-off write (a thread reply, a reaction). Never coalesced; sent once each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import utcnow
from core.models import Outbox, OutboxState, RunEvent, Task
from core.sql import insert_ignore

MessageKind = Literal["upsert", "append"]


class Operation(BaseModel):
    """What one outbox row asks its channel to do: the row's payload, typed.

    Subclasses set ``CHANNEL`` and a literal ``op`` (the union's discriminator). Unknown keys in a
    stored payload are ignored, so rows written by an older version still deliver.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    CHANNEL: ClassVar[str]
    # The first feedback on a new request (a 👀, the queued check run, the first status post):
    # notifiers send it in a lane of its own, ahead of progress writes.
    ack: bool = False

    def payload(self) -> dict[str, Any]:
        """The stored form of the operation."""
        return self.model_dump(mode="json")


Op = TypeVar("Op", bound=Operation)


class Operations(Generic[Op]):
    """One channel's operations (a discriminated union): how its notifier reads rows back."""

    def __init__(self, channel: str, union: Any) -> None:
        self.channel = channel
        self._adapter: TypeAdapter[Op] = TypeAdapter(union)

    def parse(self, row: Outbox) -> Op:
        """The row's operation; :class:`GiveUp` when the payload is not one of them."""
        try:
            return self._adapter.validate_python(row.payload)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise GiveUp(f"not a {self.channel} outbox operation: {problems}") from exc

    def parse_or_none(self, row: Outbox) -> Op | None:
        """The row's operation, or ``None`` when it is not one (delivering it will say why)."""
        try:
            return self._adapter.validate_python(row.payload)
        except ValidationError:
            return None


@dataclass(frozen=True)
class OutboxMessage:
    """A notification to write: one operation on one remote object (``key``)."""

    key: str
    kind: MessageKind
    op: Operation
    # Unique across all rows: the same cause never yields two rows (a replayed transaction is a no-op).
    idempotency_key: str | None = None
    # A state change: sent without cosmetic pacing (the journal decides).
    urgent: bool = False

    @property
    def channel(self) -> str:
        """The channel whose notifier delivers it (the operation's)."""
        return self.op.CHANNEL


def outbox_rows(
    messages: Sequence[OutboxMessage], task_id: str | None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The ``Outbox`` rows for ``messages`` (pending, due now)."""
    now = now or utcnow()
    return [
        {
            "channel": m.channel,
            "key": m.key,
            "kind": m.kind,
            "payload": m.op.payload(),
            "idempotency_key": m.idempotency_key,
            "urgent": m.urgent,
            "state": OutboxState.pending.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "task_id": task_id,
        }
        for m in messages
    ]


async def write_messages(
    session: AsyncSession,
    messages: Sequence[OutboxMessage],
    task_id: str | None,
    *,
    skip_duplicates: bool = False,
) -> None:
    """Write ``messages`` as outbox rows in ``session``'s transaction.

    ``skip_duplicates``: a message whose idempotency key exists already is not written again (a
    replayed delivery); otherwise a duplicate fails the transaction, as a bug should.
    """
    if not messages:
        return
    rows = outbox_rows(messages, task_id)
    if skip_duplicates:
        await insert_ignore(session, Outbox, rows, ["idempotency_key"])
    else:
        await session.execute(insert(Outbox), rows)


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
    reporters mark what it causes as acknowledgements (:attr:`Operation.ack`)."""
    return event.type == "status" and event.run_id is None and "from" not in event.data


def is_ack(row: Outbox) -> bool:
    """Whether ``row``'s operation is an acknowledgement (:attr:`Operation.ack`); any channel."""
    return row.payload.get("ack") is True


def mark_ack(row: Outbox) -> None:
    """Make ``row`` (in memory) an acknowledgement: an upsert that took over a coalesced one's."""
    row.payload = {**row.payload, "ack": True}


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
