"""The task state machine: every allowed transition lives here and nowhere else.

::

    queued ──> running ──> succeeded | failed | cancelled | timed_out | budget_exceeded
      │  ^        │  │
      │  └────────┘  └──> waiting   (an agent question; a requeue after a crash goes back to queued)
      └──> waiting ──> queued        (lock, concurrency limit, maintainer approval)

A terminal task may go back to ``queued`` (retry, or a follow-up on the same branch).
"""

from __future__ import annotations

from enum import StrEnum

from core.errors import InvalidTransition


class TaskState(StrEnum):
    """Where a task is in its life."""

    queued = "queued"
    waiting = "waiting"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    budget_exceeded = "budget_exceeded"

    @property
    def terminal(self) -> bool:
        """True once the task has ended (until a retry or follow-up requeues it)."""
        return self in TERMINAL


TERMINAL = frozenset(
    {
        TaskState.succeeded,
        TaskState.failed,
        TaskState.cancelled,
        TaskState.timed_out,
        TaskState.budget_exceeded,
    }
)

_ENDINGS = TERMINAL - {TaskState.succeeded, TaskState.timed_out, TaskState.budget_exceeded}

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.queued: frozenset({TaskState.running, TaskState.waiting} | _ENDINGS),
    TaskState.waiting: frozenset({TaskState.queued, TaskState.running} | _ENDINGS),
    TaskState.running: frozenset({TaskState.queued, TaskState.waiting} | TERMINAL),
    **{state: frozenset({TaskState.queued}) for state in TERMINAL},
}


def check_transition(current: TaskState | str, target: TaskState | str) -> TaskState:
    """Return ``target`` as a state if the move from ``current`` is allowed, else raise."""
    cur, tgt = TaskState(current), TaskState(target)
    if tgt not in TRANSITIONS[cur]:
        raise InvalidTransition(cur.value, tgt.value)
    return tgt


class RunOutcome(StrEnum):
    """How one run (attempt) ended; mirrors the terminal task states plus ``running``."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    budget_exceeded = "budget_exceeded"
    requeued = "requeued"
    waiting = "waiting"
