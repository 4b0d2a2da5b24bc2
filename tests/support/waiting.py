"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "budget_exceeded"}


async def wait_for(
    client: httpx.AsyncClient, task_id: str, states: set[str] | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """Poll the API until the task reaches one of ``states`` (default: any terminal state)."""
    wanted = states or TERMINAL
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/api/tasks/{task_id}")
        response.raise_for_status()
        task = response.json()
        if task["state"] in wanted:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"task {task_id} stuck in {task.get('state')} ({task.get('state_reason')}); wanted {wanted}"
    )


async def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Await ``predicate()`` (sync or async) until truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


def event_texts(events: list[dict[str, Any]]) -> list[str]:
    """The text of each log event."""
    return [e["data"].get("text", "") for e in events if e["type"] == "log"]
