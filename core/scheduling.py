"""Admission and queueing: concurrency caps, one active task per target, and FIFO promotion.

A task may start when fewer than ``max_running`` tasks run overall, fewer than ``per_repo`` run on
its repository, and no other task runs on its target (issue or pull request). Otherwise it goes to
``waiting`` with its queue position, and is promoted (oldest first) when a slot frees. Decisions are
serialised by an admission lock (one row every admission writes first), so two workers can never
both take the last slot. A crashed run holds nothing: the reaper ends or
requeues it once its heartbeat is stale, which frees its slot and its target.
"""

from __future__ import annotations

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


async def _running(session: AsyncSession, *conditions: ColumnElement[bool]) -> int:
    query = (
        select(func.count()).select_from(Task).where(col(Task.state) == TaskState.running.value, *conditions)
    )
    return int((await session.execute(query)).scalar_one())


async def blocked_by(session: AsyncSession, task: Task, limits: ConcurrencyLimits) -> str | None:
    """Why ``task`` cannot start now, or ``None`` when it may (call under the admission lock)."""
    if task.target_key and await _running(
        session, col(Task.target_key) == task.target_key, col(Task.id) != task.id
    ):
        return f"{WAIT_TARGET} {task.target_key}"
    if await _running(session) >= limits.max_running:
        return f"{WAIT_LIMIT} ({limits.max_running} running)"
    if await _running(session, col(Task.repo) == task.repo) >= limits.per_repo:
        return f"{WAIT_REPO} ({limits.per_repo} running on {task.repo})"
    # First come, first served: an older task of this repository that is queued, or waiting for a
    # slot (not for its target or an approval), goes first.
    older = await session.execute(
        select(func.count())
        .select_from(Task)
        .where(
            col(Task.repo) == task.repo,
            col(Task.id) != task.id,
            col(Task.created_at) < task.created_at,
            (col(Task.state) == TaskState.queued.value)
            | (
                (col(Task.state) == TaskState.waiting.value)
                & (
                    col(Task.state_reason).like(f"{WAIT_LIMIT}%")
                    | col(Task.state_reason).like(f"{WAIT_REPO}%")
                )
            ),
        )
    )
    if int(older.scalar_one()):
        return f"{WAIT_REPO} (older tasks of {task.repo} go first)"
    return None


async def queue_position(session: AsyncSession, task: Task) -> int:
    """1 + the number of tasks waiting (not for approval) that were created before ``task``."""
    query = (
        select(func.count())
        .select_from(Task)
        .where(_waiting_for_a_slot(), col(Task.created_at) < task.created_at, col(Task.id) != task.id)
    )
    return int((await session.execute(query)).scalar_one()) + 1


async def promote_waiting(
    session: AsyncSession, journal: Journal, queue: Queue, limits: ConcurrencyLimits, *, batch: int = 50
) -> list[str]:
    """Queue the oldest waiting tasks that may start now; return their ids.

    Call under the admission lock. Tasks counted here as promoted are not yet running, so the number
    promoted is bounded by the free slots; the lease re-checks admission anyway.
    """
    free = limits.max_running - await _running(session)
    if free <= 0:
        return []
    rows = await session.execute(
        select(Task).where(_waiting_for_a_slot()).order_by(col(Task.created_at), col(Task.id)).limit(batch)
    )
    promoted: list[str] = []
    repo_taken: dict[str, int] = {}
    targets: set[str] = set()
    queued_now = await session.execute(
        select(col(Task.repo), col(Task.target_key)).where(col(Task.state) == TaskState.queued.value)
    )
    for repo, target in queued_now.all():
        repo_taken[repo] = repo_taken.get(repo, 0) + 1
        if target:
            targets.add(target)
    for task in rows.scalars():
        if len(promoted) >= free:
            break
        if task.target_key and task.target_key in targets:
            continue
        if await blocked_by(session, task, limits) is not None:
            continue
        if (
            await _running(session, col(Task.repo) == task.repo) + repo_taken.get(task.repo, 0)
            >= limits.per_repo
        ):
            continue
        await journal.transition(session, task, TaskState.queued, reason="a slot is free")
        await enqueue(session, queue, task)
        promoted.append(task.id)
        repo_taken[task.repo] = repo_taken.get(task.repo, 0) + 1
        if task.target_key:
            targets.add(task.target_key)
    if promoted:
        await _report_positions(session, journal, batch)
    return promoted


async def _report_positions(session: AsyncSession, journal: Journal, limit: int) -> None:
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
