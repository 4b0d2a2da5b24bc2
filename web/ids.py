"""``GET /api/task-ids?prefix=``: the task ids that start with a prefix (the CLI accepts unique ones)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlmodel import col

from core.inputs import SafeText
from core.models import Task
from web.deps import ServicesDep, require_token

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)], tags=["tasks"])


@router.get("/task-ids")
async def task_ids(
    svc: ServicesDep,
    prefix: Annotated[SafeText, Query(min_length=1, max_length=40, description="the start of a task id")],
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> dict[str, list[str]]:
    """Up to ``limit`` task ids starting with ``prefix`` (``_`` and ``%`` match only themselves)."""
    async with svc.sessions() as session:
        rows = await session.execute(
            select(col(Task.id))
            .where(col(Task.id).startswith(prefix, autoescape=True))
            .order_by(col(Task.id))
            .limit(limit)
        )
        return {"ids": list(rows.scalars())}
