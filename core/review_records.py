"""Where reviews are kept: :class:`~core.models.ReviewRecord` rows, one per review task.

The engine writes the diff when a review fires, the worker writes the checked findings when a run
ends, and the GitHub notifier reads both to post. The newest review of a pull request and rule is
what its summary comment shows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlmodel import col

from core.clock import utcnow
from core.db import Sessions
from core.models import ReviewRecord
from core.review import DiffMap, Finding
from core.sql import dialect_insert


class ReviewRecords:
    """Reads and writes review rows."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def start(
        self, task_id: str, repo: str, number: int, rule: str, head_sha: str, diff: DiffMap
    ) -> None:
        """Record a review that fired, with the diff its comments may be placed on."""
        async with self.sessions.begin() as session:
            stmt = dialect_insert(session, ReviewRecord).values(
                task_id=task_id,
                repo=repo,
                number=number,
                rule=rule,
                head_sha=head_sha,
                diff=diff.model_dump(mode="json"),
                findings=[],
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["task_id"],
                    set_={"diff": diff.model_dump(mode="json"), "updated_at": utcnow()},
                )
            )

    async def finish(self, task_id: str, run_id: str, findings: list[Finding], summary: str | None) -> bool:
        """Record a run's checked findings; False when the task has no review row."""
        values: dict[str, Any] = {
            "run_id": run_id,
            "findings": [f.model_dump(mode="json") for f in findings],
            "summary": summary,
            "updated_at": utcnow(),
        }
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(ReviewRecord).where(col(ReviewRecord.task_id) == task_id).values(**values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def get(self, task_id: str) -> ReviewRecord | None:
        """The review of ``task_id``."""
        async with self.sessions() as session:
            found = await session.execute(select(ReviewRecord).where(col(ReviewRecord.task_id) == task_id))
            return found.scalar_one_or_none()

    async def latest(self, repo: str, number: int, rule: str) -> ReviewRecord | None:
        """The newest review of pull request ``number`` by ``rule``."""
        async with self.sessions() as session:
            found = await session.execute(
                select(ReviewRecord)
                .where(
                    col(ReviewRecord.repo) == repo,
                    col(ReviewRecord.number) == number,
                    col(ReviewRecord.rule) == rule,
                )
                .order_by(col(ReviewRecord.id).desc())
                .limit(1)
            )
            return found.scalar_one_or_none()


def findings_of(record: ReviewRecord) -> list[Finding]:
    """The stored findings, as models (rows written by this version always parse)."""
    return [Finding.model_validate(f) for f in record.findings if isinstance(f, dict)]


def diff_of(record: ReviewRecord) -> DiffMap:
    """The stored diff map."""
    return DiffMap.model_validate(record.diff or {})
