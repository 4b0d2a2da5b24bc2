"""Schedules: a rule's cron fires through arq's cron (unique) — once per scheduled time however many
workers run it — and each firing is a task like any other, with its rule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.models import Task
from core.settings import Settings
from tests.support.automations import automation_world, firings
from tests.support.env import git
from tests.support.github import REPO, handoff_worker, until

PG = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
NIGHTLY = {
    "name": "nightly",
    "schedule": "*/3 * * * * *",  # every 3 seconds (a leading seconds field), to keep the test short
    "repos": [REPO],
    "do": "work",
    "agent": "fixer",
    "instructions": "Update the dependencies ({date}).",
}


@PG
async def test_a_schedule_fires_once_across_two_workers(settings: Settings, tmp_path: Path) -> None:
    async with automation_world(settings, tmp_path, [NIGHTLY]) as world:
        async with handoff_worker(world) as one, handoff_worker(world) as two:
            assert {c.name for c in one.cron_jobs} >= {"schedule:nightly"}
            assert {c.name for c in two.cron_jobs} >= {"schedule:nightly"}

            async def fired_twice() -> bool:
                return len([f for f in await firings(world) if f.decision == "fired"]) >= 2

            await until(fired_twice, 30)
            await asyncio.sleep(1.0)  # a straggler from the other worker would land now

            async def finished() -> Task | None:
                done = [t for t in await world.tasks() if t.state == "succeeded"]
                return done[0] if done else None

            first = await until(finished, 60)
            await world.outbox_idle()
        decisions = await firings(world)
        fired = [f for f in decisions if f.decision == "fired"]
        # Each scheduled time fired once: no firing was even attempted twice (no duplicate skip).
        assert not [f for f in decisions if (f.reason or "").startswith("already fired")]
        keys = [f.dedupe_key for f in fired]
        assert len(keys) == len(set(keys)) and all(k and k.startswith(f"nightly:{REPO}:") for k in keys)
        tasks = await world.tasks()
        assert sorted(t.id for t in tasks) == sorted(str(f.task_id) for f in fired)
        assert all(
            t.source == "github_automation" and t.links["automation"]["rule"] == "nightly" for t in tasks
        )
        # A task like any other: its branch, its draft pull request (against main), its check run.
        stamp = (first.links["automation"].get("event"), first.instructions)
        assert stamp[0] == "schedule" and stamp[1].startswith("Update the dependencies (20")
        assert git("--git-dir", str(world.bare), "show", f"handoff/{first.id}:FIX.md").startswith("Update")
        (pr,) = [p for p in world.fake.pulls.values() if p["head"]["ref"] == f"handoff/{first.id}"]
        assert pr["base"]["ref"] == "main" and "Started by the automation `nightly`." in pr["body"]
        main = git("--git-dir", str(world.bare), "rev-parse", "main")
        assert any(
            c.get("external_id") == first.id and c["head_sha"] == main for c in world.fake.checks.values()
        )
