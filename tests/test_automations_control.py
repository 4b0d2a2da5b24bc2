"""Keeping automations in hand: a newer push cancels the older review, ``/handoff pause`` stops a
running automation and every new firing (``resume`` lets them fire again), and a repository's own
rules outside the server's bounds are refused with a reason the repository can see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from core.models import AuditEntry, Task
from core.settings import Settings
from tests.support.automations import added_patch, automation_world, firings, pull_request, push
from tests.support.github import REPO, World, handoff_api, handoff_worker, until

PG = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
SLOW_REVIEW = {
    "name": "review-prs",
    "events": ["pull_request.opened", "pull_request.synchronize"],
    "do": "review",
    "agent": "sleeper",
}


def _comment(world: World, number: int, body: str, cid: int, author: str = "alice") -> dict[str, Any]:
    payload = world.payload(
        "issue_comment",
        "created",
        sender=author,
        issue={
            "number": number,
            "title": "PR",
            "html_url": f"https://github.com/{REPO}/pull/{number}",
            "pull_request": {"url": f"https://api.github.com/repos/{REPO}/pulls/{number}"},
        },
        comment={"id": cid, "body": body, "user": {"login": author, "type": "User", "id": 1}},
    )
    return payload


async def _automation_tasks(world: World) -> list[Task]:
    return [t for t in await world.tasks() if t.source == "github_automation"]


async def _states(world: World, wanted: list[set[str]]) -> list[Task]:
    async def check() -> list[Task] | None:
        tasks = await _automation_tasks(world)
        if len(tasks) != len(wanted):
            return None
        return tasks if all(t.state in w for t, w in zip(tasks, wanted, strict=True)) else None

    found: list[Task] = await until(check, 60)
    return found


@PG
async def test_newer_push_cancels_the_older_review_and_pause_stops_everything(
    settings: Settings, tmp_path: Path
) -> None:
    async with automation_world(settings, tmp_path, [SLOW_REVIEW]) as world:
        shas = [push(world, tmp_path, "feature", {f"src/{i}.py": f"x = {i}\n"}) for i in range(1, 3)]
        world.fake.add_pull(REPO, 9, "feature", sha=shas[0])
        world.fake.set_files(
            REPO, 9, [{"filename": "src/1.py", "status": "added", "patch": added_patch(["x"])}]
        )
        async with handoff_api(world) as client, handoff_worker(world):
            await world.send(client, "pull_request", pull_request(world, "opened", 9, "feature", shas[0]))
            await _states(world, [{"running"}])
            # A new push: the review of the old head is cancelled, the new one starts.
            world.fake.set_files(
                REPO,
                9,
                [{"filename": "src/2.py", "status": "added", "patch": added_patch(["x"])}],
                sha=shas[1],
            )
            await world.send(
                client, "pull_request", pull_request(world, "synchronize", 9, "feature", shas[1])
            )
            await _states(world, [{"cancelled"}, {"running"}])
            # The kill switch: the running review stops at once, and nothing fires any more.
            await world.send(client, "issue_comment", _comment(world, 9, "/handoff pause", cid=901))
            await world.handled(world._deliveries[-1])
            tasks = await _states(world, [{"cancelled"}, {"cancelled"}])
            await world.send(
                client, "pull_request", pull_request(world, "synchronize", 9, "feature", "e" * 40)
            )
            await world.handled(world._deliveries[-1])
            assert len(await _automation_tasks(world)) == 2
            # An outsider cannot lift it.
            await world.send(client, "issue_comment", _comment(world, 9, "/handoff resume", 902, "mallory"))
            await world.handled(world._deliveries[-1])
            await world.send(
                client, "pull_request", pull_request(world, "synchronize", 9, "feature", "f" * 40)
            )
            await world.handled(world._deliveries[-1])
            assert len(await _automation_tasks(world)) == 2
            # A writer can: the next push is reviewed again.
            await world.send(client, "issue_comment", _comment(world, 9, "/handoff resume", cid=903))
            await world.handled(world._deliveries[-1])
            world.fake.set_files(REPO, 9, [], sha=shas[1])
            await world.send(
                client, "pull_request", pull_request(world, "synchronize", 9, "feature", shas[1] + "")
            )
            await world.handled(world._deliveries[-1])
        async with world.db() as session:
            audit = [a for a in (await session.execute(select(AuditEntry))).scalars() if a.action == "cancel"]
        # The older review was cancelled as superseded; the newer one by alice's pause.
        assert ("automation", f"superseded by a review of {shas[1][:7]}", tasks[0].id) in [
            (a.actor, a.reason, a.task_id) for a in audit
        ]
        assert ("github:alice", tasks[1].id) in [(a.actor, a.task_id) for a in audit]
        reasons = [(f.decision, f.reason) for f in await firings(world)]
        assert reasons[:2] == [("fired", None), ("fired", None)]
        assert reasons[2][0] == "skipped" and "automations are paused on acme/widgets" in (
            reasons[2][1] or ""
        )
        assert reasons[3][0] == "skipped" and "paused" in (reasons[3][1] or "")
        # After resume: the head that was reviewed already is a duplicate, not a new firing.
        assert reasons[4] == ("skipped", f"already fired for review-prs:{REPO}:{shas[1]}")
        replies = [c["body"] for c in world.fake.issue_comments(REPO, 9)]
        assert any("@mallory" in r and "/handoff resume" in r for r in replies)


@PG
async def test_repository_rules_outside_the_servers_bounds_are_refused_visibly(
    settings: Settings, tmp_path: Path
) -> None:
    repo_rules = {
        "automations": [
            {
                "name": "too-rich",
                "events": ["pull_request.opened"],
                "do": "review",
                "budget": {"max_cost_usd": 50},
            },
            {
                "name": "on-schedule",
                "schedule": "0 3 * * *",
                "repos": [REPO],
                "do": "work",
                "instructions": "x",
            },
            {
                "name": "fine",
                "events": ["pull_request.opened"],
                "do": "review",
                "agent": "reviewer",
                "budget": {"max_cost_usd": 1},
            },
        ]
    }
    async with automation_world(
        settings,
        tmp_path,
        [],
        allowed_overrides=["agent", "automations"],
        agents=["reviewer", "shell"],
        max_budget={"max_cost_usd": 2},
    ) as world:
        world.fake.files[(REPO, ".handoff.yml")] = yaml.safe_dump(repo_rules)
        sha = push(
            world,
            tmp_path,
            "feature",
            {"src/a.py": "x\n", ".review/result.json": '{"type": "result", "data": {"findings": []}}\n'},
        )
        world.fake.add_pull(REPO, 11, "feature", sha=sha)
        world.fake.set_files(
            REPO, 11, [{"filename": "src/a.py", "status": "added", "patch": added_patch(["x"])}]
        )
        async with handoff_api(world) as client, handoff_worker(world):
            await world.send(client, "pull_request", pull_request(world, "opened", 11, "feature", sha))
            (task,) = await _states(world, [{"succeeded"}])
            await world.outbox_idle()
        checks = [c for c in world.fake.checks.values() if c.get("name") == "Handoff automations"]
        (check,) = checks
        assert check["head_sha"] == sha and check["conclusion"] == "neutral"
        summary = check["output"]["summary"]
        assert "`too-rich`: its budget is above this server's bounds (max_cost_usd 50 > 2)" in summary
        assert "`on-schedule`: schedules are set in the server's handoff.yml" in summary
        assert "fine" not in summary
        refused = [f for f in await firings(world) if f.decision == "skipped"]
        assert sorted(f.rule for f in refused) == ["on-schedule", "too-rich"]
        assert all((f.reason or "").startswith("refused: ") and f.source == "repo" for f in refused)
        fired = [f for f in await firings(world) if f.decision == "fired"]
        assert [(f.rule, f.source, f.task_id) for f in fired] == [("fine", "repo", task.id)]
        # The rule's budget was applied to its task.
        assert task.budget == {"max_cost_usd": 1}


@PG
async def test_repository_rules_on_a_server_that_allows_none(settings: Settings, tmp_path: Path) -> None:
    async with automation_world(settings, tmp_path, []) as world:
        rules = [{"name": "mine", "events": ["pull_request.opened"], "do": "review"}]
        world.fake.files[(REPO, ".handoff.yml")] = yaml.safe_dump({"automations": rules})
        world.fake.add_pull(REPO, 12, "feature", sha="a" * 40)
        async with handoff_api(world) as client, handoff_worker(world):
            await world.send(client, "pull_request", pull_request(world, "opened", 12, "feature", "a" * 40))
            await world.handled(world._deliveries[-1])
            await world.outbox_idle()
        (check,) = [c for c in world.fake.checks.values() if c.get("name") == "Handoff automations"]
        assert "may not be set per repository on this server" in check["output"]["summary"]
        assert await world.tasks() == []


@PG
async def test_review_command_reviews_the_pull_request_now(settings: Settings, tmp_path: Path) -> None:
    # A rule that never fires on its own (labels it will not find): the command ignores filters.
    rule = {
        "name": "review-prs",
        "events": ["pull_request.opened"],
        "if": {"labels": ["never"]},
        "do": "review",
        "agent": "reviewer",
    }
    async with automation_world(settings, tmp_path, [rule]) as world:
        findings = [{"path": "src/a.py", "line": 1, "severity": "warning", "body": "Name the constant."}]
        result = json.dumps({"type": "result", "data": {"summary": "ok", "findings": findings}})
        sha = push(world, tmp_path, "feature", {"src/a.py": "x = 1\n", ".review/result.json": result + "\n"})
        world.fake.add_pull(REPO, 13, "feature", sha=sha)
        world.fake.set_files(
            REPO, 13, [{"filename": "src/a.py", "status": "added", "patch": added_patch(["x = 1"])}]
        )
        async with handoff_api(world) as client, handoff_worker(world):
            # An outsider is refused; a writer gets a review.
            await world.send(client, "issue_comment", _comment(world, 13, "/handoff review", 131, "mallory"))
            await world.handled(world._deliveries[-1])
            await world.send(client, "issue_comment", _comment(world, 13, "/handoff review", cid=132))
            (task,) = await _states(world, [{"succeeded"}])
            await world.outbox_idle()
        assert task.links["automation"] == {
            "rule": "review-prs",
            "source": "command",
            "mode": "review",
            "event": "command",
            "head_sha": sha,
            "delivery": world._deliveries[-1],
        }
        (review,) = world.fake.reviews.values()
        (comment,) = world.fake.review_comments.values()
        assert (
            review["commit_id"] == sha
            and comment["path"] == "src/a.py"
            and "Name the constant." in comment["body"]
        )
        replies = [c["body"] for c in world.fake.issue_comments(REPO, 13) if "@mallory" in c["body"]]
        assert replies and "/handoff review" in replies[0]
