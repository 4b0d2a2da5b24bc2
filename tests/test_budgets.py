"""Budgets: tokens, cost and wall clock end a task ``budget_exceeded`` and keep what was done."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from core.budget import Budget
from core.settings import Settings
from tests.support.env import LiveServer, git, running_worker
from tests.support.waiting import wait_for

# An agent that edits a file, then reports usage in steps (as agent CLIs do) and keeps going.
SPENDER = (
    "echo partial > PARTIAL.md; "
    "for i in 1 2 3 4 5 6 7 8 9 10; do "
    'echo "{\\"type\\": \\"progress\\", \\"data\\": {\\"usage\\": {\\"input_tokens\\": 400, \\"output_tokens\\": 100, \\"cost_usd\\": 0.01}}}"; '
    "sleep 0.3; done; echo finished > DONE.md"
)


@pytest.mark.parametrize(
    ("budget", "reason"),
    [({"max_tokens": 1200}, "tokens used (limit 1200)"), ({"max_cost_usd": 0.025}, "spent (limit $0.03)")],
    ids=["tokens", "cost"],
)
async def test_usage_budget_stops_the_agent_and_keeps_partial_work(
    sqlite_settings: Settings, bare_repo: Path, budget: dict[str, float], reason: str
) -> None:
    from web.app import create_app

    async with (
        LiveServer(create_app(sqlite_settings)) as api,
        httpx.AsyncClient(base_url=api.url) as client,
        running_worker(sqlite_settings),
    ):
        body = {"repo": str(bare_repo), "instructions": SPENDER, "budget": budget}
        task = (await client.post("/api/tasks", json=body)).json()
        done = await wait_for(client, task["id"], timeout=30)
    assert done["state"] == "budget_exceeded", done
    assert reason in done["state_reason"]
    run = done["runs"][0]
    assert run["tokens_in"] + run["tokens_out"] <= 2000  # stopped early, not after all 10 steps
    branch = f"handoff/{task['id']}"
    assert git("--git-dir", str(bare_repo), "show", f"{branch}:PARTIAL.md") == "partial"
    files = git("--git-dir", str(bare_repo), "ls-tree", "--name-only", branch).split()
    assert "DONE.md" not in files


async def test_wall_clock_budget(sqlite_settings: Settings, bare_repo: Path) -> None:
    from web.app import create_app

    async with (
        LiveServer(create_app(sqlite_settings)) as api,
        httpx.AsyncClient(base_url=api.url) as client,
        running_worker(sqlite_settings),
    ):
        body = {
            "repo": str(bare_repo),
            "instructions": "echo a > A.md; sleep 30",
            "budget": {"wall_clock_s": 2},
        }
        task = (await client.post("/api/tasks", json=body)).json()
        done = await wait_for(client, task["id"], timeout=30)
    assert done["state"] == "budget_exceeded"
    assert "wall-clock budget of 2 s" in done["state_reason"]
    assert git("--git-dir", str(bare_repo), "show", f"handoff/{task['id']}:A.md") == "a"


def test_task_budgets_only_tighten() -> None:
    server = Budget(max_tokens=1000, max_cost_usd=None)
    assert server.tightened({"max_tokens": 5000}).max_tokens == 1000
    assert server.tightened({"max_tokens": 10}).max_tokens == 10
    assert server.tightened({"max_cost_usd": 2.0}).max_cost_usd == 2.0
