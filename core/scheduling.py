"""Admission and queueing: concurrency caps, one active task per target, and FIFO promotion.

A task may start when fewer than ``max_running`` tasks run overall, fewer than ``per_repo`` run on
its repository, and no other task runs on its target (issue or pull request). Which tasks those
are is decided by one walk (:func:`admit`): over the tasks that wait for a start — ``queued``, or
``waiting`` for a slot — oldest first, each is admitted when its target is free and its repository
and the whole deployment still have room. So every free slot is filled in one pass, starts follow
creation order within a repository (and across repositories, skipping only tasks whose own
repository or target is full), and a task created later never takes the slot of an older one.

The walk runs when a job leases its task (admitted: it runs; not admitted: it waits, with its queue
position) and whenever a slot may have freed (a run ended, the reaper's pass): admitted tasks that
were ``waiting`` are queued at once, in the same transaction. Decisions are serialised by an
admission lock (one row every admission writes first), so two workers can never both take the last
slot. A crashed run holds nothing: the reaper ends or requeues it once its heartbeat is stale,
which frees its slot and its target.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from core.clock import utcnow
from core.config import ConcurrencyLimits
from core.journal import Journal
from core.models import Task
from core.ports import Queue
from core.states import TaskState

ADMISSION_LOCK = "admission"
# How many waiting tasks one walk looks at (oldest first); later ones wait for the next walk.
WALK_LIMIT = 1000

# Reasons a task waits; the prefix tells promotion it may retry.
WAIT_LIMIT = "concurrency limit"
WAIT_REPO = "repository limit"
WAIT_TARGET = "another task is running on"
WAIT_APPROVAL = "awaiting approval by a maintainer"
# The agent asked a question: only the answer (a follow-up) requeues the task, never a free slot.
WAIT_QUESTION = "question:"


def _waiting_for_a_slot() -> ColumnElement[bool]:
    """Waiting tasks that a free slot may promote (not held for approval or an answer)."""
    return (
        (col(Task.state) == TaskState.waiting.value)
        & col(Task.needs_approval).is_(False)
        & ~func.coalesce(col(Task.state_reason), "").like(f"{WAIT_QUESTION}%")
    )


async def admission_lock(session: AsyncSession, holder: str) -> None:
    """Serialise admission decisions until the transaction ends.

    An upsert of one well-known row always writes: on PostgreSQL it row-locks it, on SQLite it takes
    the database write lock, so concurrent admissions (any number of workers) queue up behind it.
    """
    await session.execute(
        text(
            "INSERT INTO lock (name, holder, expires_at) VALUES (:name, :holder, :now) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
        ),
        {"name": ADMISSION_LOCK, "holder": holder[:255], "now": utcnow()},
    )


async def enqueue(session: AsyncSession, queue: Queue, task: Task, *, defer_s: float = 0.0) -> int:
    """Bump the task's queue generation and enqueue a job carrying it; return the generation.

    The generation makes every enqueue a distinct arq job id (arq keeps finished job ids for an
    hour) while a repeat of the same enqueue stays a no-op; a job whose generation is stale is skipped.
    """
    result = await session.execute(
        update(Task)
        .where(col(Task.id) == task.id)
        .values(queue_gen=col(Task.queue_gen) + 1)
        .returning(col(Task.queue_gen))
    )
    gen = int(result.scalar_one())
    task.queue_gen = gen
    await queue.enqueue_run(task.id, gen, defer_s=defer_s)
    return gen


@dataclass
class Walk:
    """The outcome of one admission walk."""

    admitted: list[Task] = field(default_factory=list)
    # Why each task looked at was not admitted.
    refused: dict[str, str] = field(default_factory=dict)

    def allows(self, task_id: str) -> bool:
        """Whether ``task_id`` was admitted."""
        return any(t.id == task_id for t in self.admitted)


async def walk(session: AsyncSession, limits: ConcurrencyLimits) -> Walk:
    """Which waiting-to-start tasks may run now (call under the admission lock)."""
    running = (
        await session.execute(
            select(col(Task.repo), col(Task.target_key)).where(col(Task.state) == TaskState.running.value)
        )
    ).all()
    per_repo: Counter[str] = Counter(repo for repo, _ in running)
    running_here = dict(per_repo)
    targets = {target for _, target in running if target}
    free = limits.max_running - len(running)
    candidates = await session.execute(
        select(Task)
        .where((col(Task.state) == TaskState.queued.value) | _waiting_for_a_slot())
        .order_by(col(Task.created_at), col(Task.id))
        .limit(WALK_LIMIT)
    )
    result = Walk()
    for task in candidates.scalars():
        if len(result.admitted) >= free:
            result.refused[task.id] = f"{WAIT_LIMIT} ({limits.max_running} running)"
        elif task.target_key and task.target_key in targets:
            result.refused[task.id] = f"{WAIT_TARGET} {task.target_key}"
        elif per_repo[task.repo] >= limits.per_repo:
            if running_here.get(task.repo, 0) >= limits.per_repo:
                result.refused[task.id] = f"{WAIT_REPO} ({limits.per_repo} running on {task.repo})"
            else:
                result.refused[task.id] = f"{WAIT_REPO} (older tasks of {task.repo} go first)"
        else:
            result.admitted.append(task)
            per_repo[task.repo] += 1
            if task.target_key:
                targets.add(task.target_key)
    return result


@dataclass(frozen=True)
class Admission:
    """What one admission did: why the task asked about may not start (``None``: it may), and
    which waiting tasks it queued."""

    reason: str | None
    promoted: list[str]


async def admit(
    session: AsyncSession,
    journal: Journal,
    queue: Queue,
    limits: ConcurrencyLimits,
    task: Task | None = None,
) -> Admission:
    """Walk, queue the admitted tasks that were waiting, and say whether ``task`` may start.

    Call under the admission lock.
    """
    result = await walk(session, limits)
    promoted: list[str] = []
    for admitted in result.admitted:
        if admitted.state == TaskState.waiting.value and (task is None or admitted.id != task.id):
            await journal.transition(session, admitted, TaskState.queued, reason="a slot is free")
            await enqueue(session, queue, admitted)
            promoted.append(admitted.id)
    if promoted:
        await _report_positions(session, journal)
    if task is None or result.allows(task.id):
        return Admission(None, promoted)
    reason = result.refused.get(task.id, f"{WAIT_LIMIT} ({limits.max_running} running)")
    return Admission(reason, promoted)


async def promote_waiting(
    session: AsyncSession, journal: Journal, queue: Queue, limits: ConcurrencyLimits
) -> list[str]:
    """Queue every waiting task that may start now; return their ids (call under the lock)."""
    return (await admit(session, journal, queue, limits)).promoted


async def queue_position(session: AsyncSession, task: Task) -> int:
    """1 + the number of tasks waiting (not for approval) that were created before ``task``."""
    query = (
        select(func.count())
        .select_from(Task)
        .where(_waiting_for_a_slot(), col(Task.created_at) < task.created_at, col(Task.id) != task.id)
    )
    return int((await session.execute(query)).scalar_one()) + 1


async def _report_positions(session: AsyncSession, journal: Journal, limit: int = 50) -> None:
    """Tell the tasks still waiting for a slot where they now stand (the queue moved)."""
    rows = await session.execute(
        select(Task).where(_waiting_for_a_slot()).order_by(col(Task.created_at), col(Task.id)).limit(limit)
    )
    for position, task in enumerate(rows.scalars(), start=1):
        await journal.append_event(
            session,
            task,
            None,
            "status",
            {"state": "waiting", "reason": task.state_reason, "position": position},
        )
