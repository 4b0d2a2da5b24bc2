"""SQLModel tables: the durable state of Handoff.

Timestamps are stored as UTC and always read back as aware datetimes (SQLite drops the zone).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import JSON, Column, Field, SQLModel

from core.clock import as_utc, utcnow
from core.states import RunOutcome, TaskState


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp column that always round-trips as an aware UTC datetime."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def _ts(nullable: bool = False, index: bool = False) -> Any:
    column: Column[datetime] = Column(UTCDateTime(), nullable=nullable, index=index)
    if nullable:
        return Field(default=None, sa_column=column)
    return Field(default_factory=utcnow, sa_column=column)


def new_id(prefix: str) -> str:
    """A short, URL- and branch-safe unique id such as ``t_3f9a1c0b2d4e6f70``."""
    return f"{prefix}_{secrets.token_hex(8)}"


class TaskSource(StrEnum):
    """Where a task was requested."""

    api = "api"
    github_issue = "github_issue"
    github_comment = "github_comment"
    github_review = "github_review"
    # Started by an automation rule (an event or a schedule), not by a person's command.
    github_automation = "github_automation"
    slack = "slack"


class Task(SQLModel, table=True):
    """The requested work, from request to result, across all its runs."""

    id: str = Field(default_factory=lambda: new_id("t"), primary_key=True, max_length=40)
    source: str = Field(default=TaskSource.api.value, max_length=32, index=True)
    repo: str = Field(max_length=1000, index=True)
    base_ref: str | None = Field(default=None, max_length=255)
    instructions: str
    requester: str | None = Field(default=None, max_length=255, index=True)
    agent: str = Field(default="default", max_length=100)
    state: str = Field(default=TaskState.queued.value, max_length=32, index=True)
    state_reason: str | None = None
    dedupe_key: str | None = Field(default=None, max_length=255, unique=True)
    target_key: str | None = Field(default=None, max_length=500, index=True)
    attempts: int = Field(default=0, description="runs started so far, over the task's life")
    tries: int = Field(default=0, description="runs started since the last manual retry")
    max_attempts: int = 3
    event_seq: int = Field(default=0, description="last event sequence number handed out")
    queue_gen: int = Field(default=0, description="bumped at each enqueue; the job carries it")
    followups: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    needs_approval: bool = False
    cancel_requested: bool = False
    links: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    budget: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    branch: str | None = Field(default=None, max_length=255)
    pr_url: str | None = None
    summary: str | None = None
    created_at: datetime = _ts(index=True)
    updated_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class Run(SQLModel, table=True):
    """One execution attempt of a task."""

    id: str = Field(default_factory=lambda: new_id("r"), primary_key=True, max_length=40)
    task_id: str = Field(foreign_key="task.id", index=True, max_length=40)
    attempt: int = 1
    outcome: str = Field(default=RunOutcome.running.value, max_length=32, index=True)
    worker_id: str | None = Field(default=None, max_length=255)
    container_id: str | None = Field(default=None, max_length=128)
    branch: str | None = Field(default=None, max_length=255)
    head_sha: str | None = Field(default=None, max_length=64)
    pr_number: int | None = None
    model: str | None = Field(default=None, max_length=255)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    steps: int = 0
    instructions: str | None = Field(default=None, description="what this run was asked to do")
    exit_code: int | None = None
    summary: str | None = None
    error: str | None = None
    started_at: datetime = _ts()
    heartbeat_at: datetime = _ts(index=True)
    finished_at: datetime | None = _ts(nullable=True)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, or ``None`` while running."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class EventType(StrEnum):
    """The run event vocabulary shared by the built-in agent and external agent CLIs."""

    status = "status"
    progress = "progress"
    log = "log"
    tool = "tool"
    message = "message"
    result = "result"
    error = "error"
    heartbeat = "heartbeat"
    question = "question"


class RunEvent(SQLModel, table=True):
    """One entry of the ordered event stream of a task (and of its run, when there is one)."""

    __table_args__ = (sa.UniqueConstraint("task_id", "seq", name="uq_runevent_task_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(foreign_key="task.id", index=True, max_length=40)
    run_id: str | None = Field(default=None, foreign_key="run.id", index=True, max_length=40)
    seq: int
    type: str = Field(max_length=32)
    ts: datetime = _ts()
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

    def wire(self) -> dict[str, Any]:
        """The ``{type, ts, data}`` form used on the API and in SSE."""
        return {
            "id": self.id,
            "seq": self.seq,
            "run_id": self.run_id,
            "type": self.type,
            "ts": self.ts.isoformat(),
            "data": self.data,
        }


class Delivery(SQLModel, table=True):
    """An inbound delivery (GitHub webhook, Slack event), unique by its platform id."""

    id: str = Field(primary_key=True, max_length=255)
    source: str = Field(max_length=32)
    event: str = Field(max_length=100)
    # The Slack workspace it came from (``None`` for GitHub).
    team_id: str | None = Field(default=None, max_length=32)
    received_at: datetime = _ts()
    task_id: str | None = Field(default=None, max_length=40)
    outcome: str | None = Field(default=None, max_length=255)
    # A Slack request as received, until its job has handled it (GitHub can redeliver its own).
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class OutboxState(StrEnum):
    """Where a notification is in its delivery."""

    pending = "pending"
    sent = "sent"
    superseded = "superseded"
    failed = "failed"


class Outbox(SQLModel, table=True):
    """A notification meant for the outside world, written with the change that caused it."""

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32, index=True)
    key: str = Field(max_length=255, index=True)
    kind: str = Field(max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    idempotency_key: str | None = Field(default=None, max_length=255, unique=True)
    # Written for a state change (queued, running, finished...): sent without cosmetic pacing.
    urgent: bool = False
    state: str = Field(default=OutboxState.pending.value, max_length=16, index=True)
    attempts: int = 0
    next_attempt_at: datetime = _ts(index=True)
    last_error: str | None = None
    task_id: str | None = Field(default=None, max_length=40, index=True)
    created_at: datetime = _ts()
    sent_at: datetime | None = _ts(nullable=True)


class ExternalRef(SQLModel, table=True):
    """The remote id of an object Handoff created (a comment, a check run, a Slack message).

    Written right after the create succeeds, so a retry edits instead of creating twice.
    """

    key: str = Field(primary_key=True, max_length=255)
    ref: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = _ts()


class Lock(SQLModel, table=True):
    """A named lock with a holder and an expiry, so a crashed holder never keeps it."""

    name: str = Field(primary_key=True, max_length=500)
    holder: str = Field(max_length=255)
    expires_at: datetime = _ts(index=True)


class AuditEntry(SQLModel, table=True):
    """Who asked for what, and what Handoff decided."""

    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = _ts(index=True)
    actor: str = Field(max_length=255)
    action: str = Field(max_length=64)
    decision: str = Field(max_length=32)
    reason: str | None = None
    task_id: str | None = Field(default=None, max_length=40, index=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class AutomationFiring(SQLModel, table=True):
    """One automation decision: a rule fired on an event (or schedule), or was skipped, and why.

    A fired row carries the rule's dedupe key (unique): a second event for the same head commit,
    a redelivery, or a schedule seen by two workers finds it and fires nothing.
    """

    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = _ts(index=True)
    rule: str = Field(max_length=100, index=True)
    # "server" (handoff.yml) or "repo" (the repository's .handoff.yml).
    source: str = Field(default="server", max_length=16)
    repo: str = Field(max_length=1000, index=True)
    event: str = Field(max_length=100)
    decision: str = Field(max_length=16, index=True)
    reason: str | None = None
    dedupe_key: str | None = Field(default=None, max_length=255, unique=True)
    task_id: str | None = Field(default=None, max_length=40, index=True)
    delivery_id: str | None = Field(default=None, max_length=255)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ReviewRecord(SQLModel, table=True):
    """A review-mode task's review: the diff it was asked about, and the findings it reported.

    Written when the rule fires (the commentable lines of the pull request at ``head_sha``) and
    when a run ends (its findings, checked and bounded); the GitHub notifier posts from it.
    """

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(foreign_key="task.id", max_length=40, unique=True)
    repo: str = Field(max_length=1000)
    number: int
    rule: str = Field(max_length=100)
    head_sha: str = Field(max_length=64)
    run_id: str | None = Field(default=None, max_length=40)
    summary: str | None = None
    # path -> [[first, last], ...] lines of the head commit a review comment may be on.
    diff: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    findings: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
