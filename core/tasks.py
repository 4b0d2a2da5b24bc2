"""The task service: create, list, cancel and retry tasks — the one place ingress code calls.

Creation is atomic with enqueueing: the task row is written and flushed, the job is enqueued, and
only then is the transaction committed. If Redis does not answer, the transaction rolls back and the
caller gets :class:`QueueUnavailable` (the API answers 503) with no half-created task. If the commit
fails after the enqueue, the job finds no task and does nothing.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from core.config import HandoffConfig
from core.db import Sessions
from core.errors import InvalidTransition, NotFound
from core.inputs import check_text, text_problem
from core.journal import Journal
from core.links import FollowUp, FollowUpContext, FollowUpNotice, TaskLinks
from core.models import AuditEntry, EventType, Run, Task, TaskSource
from core.ports import Queue
from core.scheduling import WAIT_APPROVAL, WAIT_QUESTION, enqueue
from core.states import TERMINAL, TaskState


@dataclass(frozen=True)
class NewTask:
    """A request for work, normalised from any ingress."""

    repo: str
    instructions: str
    source: TaskSource = TaskSource.api
    agent: str | None = None
    base_ref: str | None = None
    requester: str | None = None
    dedupe_key: str | None = None
    target_key: str | None = None
    links: TaskLinks = field(default_factory=TaskLinks)
    budget: dict[str, Any] = field(default_factory=dict)
    # An outsider's request: it waits until a maintainer approves it.
    needs_approval: bool = False


@dataclass(frozen=True)
class TaskFilter:
    """Filters for listing tasks; ``None`` means any."""

    repo: str | None = None
    state: str | None = None
    source: str | None = None
    requester: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Only these repositories (what a viewer may read); ``None`` means all of them.
    repos: frozenset[str] | None = None


class TaskService:
    """Operations on tasks shared by the REST API, the CLI, GitHub and Slack."""

    def __init__(
        self, sessions: Sessions, queue: Queue, config: HandoffConfig, journal: Journal | None = None
    ) -> None:
        self.sessions = sessions
        self.queue = queue
        self.config = config
        self.journal = journal or Journal()

    async def create(self, new: NewTask) -> tuple[Task, bool]:
        """Create and enqueue a task; return ``(task, created)``.

        A repeated ``dedupe_key`` returns the existing task with ``created=False``.
        """
        for name in ("repo", "instructions", "agent", "base_ref", "requester", "dedupe_key", "target_key"):
            check_text(name, getattr(new, name))
        agent, _profile = self.config.profile(new.agent)
        if new.dedupe_key is not None:
            existing = await self.by_dedupe(new.dedupe_key)
            if existing is not None:
                return existing, False
        task = Task(
            source=new.source.value,
            repo=new.repo,
            base_ref=new.base_ref,
            instructions=new.instructions,
            requester=new.requester,
            agent=agent,
            dedupe_key=new.dedupe_key,
            target_key=new.target_key,
            links=new.links.dump(),
            budget=dict(new.budget),
            max_attempts=self.config.limits.max_attempts,
        )
        try:
            async with self.sessions.begin() as session:
                session.add(task)
                await session.flush()
                decision = "held for approval" if new.needs_approval else "allowed"
                session.add(
                    AuditEntry(
                        actor=new.requester or "api", action="create", decision=decision, task_id=task.id
                    )
                )
                if new.needs_approval:
                    task.state = TaskState.waiting.value
                    task.state_reason = WAIT_APPROVAL
                    task.needs_approval = True
                    await session.flush()
                    await self.journal.append_event(
                        session,
                        task,
                        None,
                        EventType.status.value,
                        {"state": "waiting", "reason": WAIT_APPROVAL},
                    )
                else:
                    await self.journal.append_event(
                        session, task, None, EventType.status.value, {"state": TaskState.queued.value}
                    )
                    # Enqueue inside the transaction: a Redis failure rolls the task back.
                    await enqueue(session, self.queue, task)
        except IntegrityError:
            if new.dedupe_key is not None:
                existing = await self.by_dedupe(new.dedupe_key)
                if existing is not None:
                    return existing, False
            raise
        return task, True

    async def by_dedupe(self, key: str) -> Task | None:
        """The task created for ``key`` (a delivery), if any."""
        async with self.sessions() as session:
            result = await session.execute(select(Task).where(col(Task.dedupe_key) == key))
            return result.scalar_one_or_none()

    async def get(self, task_id: str) -> Task:
        """Return the task or raise :class:`NotFound`."""
        if text_problem(task_id):
            raise NotFound("no such task")  # no id has such characters; never ask the database
        async with self.sessions() as session:
            task = await session.get(Task, task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    async def runs(self, task_id: str) -> list[Run]:
        """The runs of a task, oldest first."""
        async with self.sessions() as session:
            result = await session.execute(
                select(Run).where(col(Run.task_id) == task_id).order_by(col(Run.attempt))
            )
            return list(result.scalars())

    async def get_run(self, run_id: str) -> Run:
        """Return the run or raise :class:`NotFound`."""
        if text_problem(run_id):
            raise NotFound("no such run")
        async with self.sessions() as session:
            run = await session.get(Run, run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return run

    async def list(
        self, filters: TaskFilter, *, offset: int = 0, limit: int = 50
    ) -> tuple[Sequence[Task], int]:
        """A page of tasks (newest first) and the total matching ``filters``."""
        for name in ("repo", "state", "source", "requester"):
            check_text(name, getattr(filters, name))
        conditions: list[Any] = []
        for column, value in (
            (col(Task.repo), filters.repo),
            (col(Task.state), filters.state),
            (col(Task.source), filters.source),
            (col(Task.requester), filters.requester),
        ):
            if value is not None:
                conditions.append(column == value)
        if filters.since is not None:
            conditions.append(col(Task.created_at) >= filters.since)
        if filters.until is not None:
            conditions.append(col(Task.created_at) < filters.until)
        if filters.repos is not None:
            conditions.append(col(Task.repo).in_(sorted(filters.repos)))
        async with self.sessions() as session:
            total = (
                await session.execute(select(func.count()).select_from(Task).where(*conditions))
            ).scalar_one()
            page = await session.execute(
                select(Task)
                .where(*conditions)
                .order_by(col(Task.created_at).desc(), col(Task.id))
                .offset(offset)
                .limit(limit)
            )
            return list(page.scalars()), int(total)

    async def cancel(self, task_id: str, actor: str = "api") -> Task:
        """Cancel a task: a queued or waiting one ends now, a running one is stopped by its worker."""
        async with self.sessions.begin() as session:
            task = await self._locked(session, task_id)
            state = TaskState(task.state)
            if state in TERMINAL:
                raise InvalidTransition(state.value, TaskState.cancelled.value)
            session.add(AuditEntry(actor=actor, action="cancel", decision="allowed", task_id=task_id))
            if state is TaskState.running:
                task.cancel_requested = True
            else:
                await self.journal.transition(
                    session, task, TaskState.cancelled, reason=f"cancelled by {actor}"
                )
        if state is TaskState.running:
            await self.queue.request_cancel(task_id)
        return task

    async def retry(self, task_id: str, actor: str = "api") -> Task:
        """Queue a new run of an ended task (a new round of ``max_attempts`` tries)."""
        async with self.sessions.begin() as session:
            task = await self._locked(session, task_id)
            await self.journal.transition(
                session,
                task,
                TaskState.queued,
                reason=f"retried by {actor}",
                values={"tries": 0, "cancel_requested": False},
            )
            session.add(AuditEntry(actor=actor, action="retry", decision="allowed", task_id=task_id))
            await enqueue(session, self.queue, task)
        return task

    async def approve(self, task_id: str, actor: str) -> Task:
        """Let a request held for approval run."""
        async with self.sessions.begin() as session:
            task = await self._locked(session, task_id)
            if not task.needs_approval or task.state != TaskState.waiting.value:
                raise InvalidTransition(task.state, "approved")
            await self.journal.transition(
                session,
                task,
                TaskState.queued,
                reason=f"approved by {actor}",
                values={"needs_approval": False},
            )
            session.add(AuditEntry(actor=actor, action="approve", decision="allowed", task_id=task_id))
            await enqueue(session, self.queue, task)
        return task

    async def follow_up(
        self, task_id: str, text: str, actor: str, context: FollowUpContext | None = None
    ) -> Task:
        """Add instructions to a task: run them after the current run, or now on the same branch.

        A task waiting for the answer to its agent's question is queued at once: the follow-up is
        the answer, and the next run resumes the agent's conversation with it.
        """
        check_text("text", text)
        async with self.sessions.begin() as session:
            task = await self._locked(session, task_id)
            entry = FollowUp(text=text, author=actor, context=context or FollowUpContext())
            task.followups = [*task.followups, entry.dump()]
            # Every home of the task (a Slack thread, a pull request) hears of it, not only the one asked in.
            notice = FollowUpNotice.for_follow_up(entry).data()
            await session.flush()
            session.add(AuditEntry(actor=actor, action="follow_up", decision="allowed", task_id=task_id))
            answered = task.state == TaskState.waiting.value and (task.state_reason or "").startswith(
                WAIT_QUESTION
            )
            if TaskState(task.state).terminal or answered:
                await self.journal.transition(
                    session,
                    task,
                    TaskState.queued,
                    reason=f"answer from {actor}" if answered else f"follow-up from {actor}",
                    extra=notice,
                    values={"tries": 0, "cancel_requested": False},
                )
                await enqueue(session, self.queue, task)
            else:
                await self.journal.append_event(
                    session,
                    task,
                    None,
                    EventType.status.value,
                    {
                        "state": task.state,
                        "followup": "queued after the current run",
                        "author": actor,
                        **notice,
                    },
                )
        return task

    async def for_target(self, target_key: str) -> Task | None:
        """The newest task on a target (issue, pull request or thread)."""
        async with self.sessions() as session:
            result = await session.execute(
                select(Task)
                .where(col(Task.target_key) == target_key)
                .order_by(col(Task.created_at).desc())
                .limit(1)
            )
            return result.scalar_one_or_none()

    async def awaiting_approval(self, target_key: str) -> builtins.list[Task]:
        """Tasks on a target held until a maintainer approves them, oldest first."""
        async with self.sessions() as session:
            result = await session.execute(
                select(Task)
                .where(
                    col(Task.target_key) == target_key,
                    col(Task.needs_approval).is_(True),
                    col(Task.state) == TaskState.waiting.value,
                )
                .order_by(col(Task.created_at))
            )
            return list(result.scalars())

    async def audit(
        self,
        actor: str,
        action: str,
        decision: str,
        reason: str | None = None,
        task_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Record a decision that did not change a task (a refusal, an ignored request)."""
        async with self.sessions.begin() as session:
            session.add(
                AuditEntry(
                    actor=actor,
                    action=action,
                    decision=decision,
                    reason=reason,
                    task_id=task_id,
                    data=data or {},
                )
            )

    async def _locked(self, session: Any, task_id: str) -> Task:
        if text_problem(task_id):
            raise NotFound("no such task")
        task: Task | None = await session.get(Task, task_id, with_for_update=True)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    async def counts_by_state(self) -> dict[str, int]:
        """How many tasks are in each state."""
        async with self.sessions() as session:
            rows = await session.execute(select(col(Task.state), func.count()).group_by(col(Task.state)))
            return {str(state): int(n) for state, n in rows.all()}
