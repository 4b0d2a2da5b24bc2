"""GitHub failing in the ways it does: rate limits, 5xx after the write landed, tokens dying early,
and payloads at GitHub's size limits — through the real notifier, outbox sender and client."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core.clock import utcnow
from core.links import TaskLinks
from core.models import Outbox, Run, RunEvent, Task, TaskSource
from core.outbox import RetryLater
from core.ports import PushResult
from core.refs import RefStore
from core.settings import Settings
from core.tasks import NewTask
from github_app.errors import GitHubRateLimited, GitHubUnavailable
from jobs.outbox import OutboxSender
from tests.support.github import INSTALLATION, REPO, World, github_world

PG = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
COMMENTS = r"/issues/\d+/comments$"


@contextlib.asynccontextmanager
async def wired(world: World) -> AsyncIterator[dict[str, Any]]:
    """In-process API services with the GitHub integration (no worker)."""
    from github_app.integration import build_integration
    from jobs.services import build_services

    services = build_services(world.settings)
    integration = build_integration(world.settings, services)
    services.journal.reporters.extend(integration.reporters)
    try:
        yield {
            "services": services,
            "svc": integration.github,
            "notifier": integration.notifiers[0],
            "post_push": integration.post_push[0],
            "sender": OutboxSender(services.sessions, integration.notifiers, services.config.outbox),
        }
    finally:
        await services.close()


async def _task(w: dict[str, Any], number: int = 1, **links: Any) -> Task:
    github = {
        "installation_id": INSTALLATION,
        "repo": REPO,
        "number": number,
        "head_sha": "a" * 40,
        "default_branch": "main",
        **links,
    }
    task: Task
    task, _ = await w["services"].tasks.create(
        NewTask(
            repo=REPO,
            instructions="do it",
            source=TaskSource.github_comment,
            links=TaskLinks.model_validate({"github": github}),
        )
    )
    return task


async def _rows(w: dict[str, Any], key_part: str) -> list[Outbox]:
    from sqlalchemy import select

    async with w["services"].sessions() as session:
        rows = (await session.execute(select(Outbox).order_by(Outbox.id))).scalars()  # type: ignore[arg-type]
        return [r for r in rows if key_part in r.key]


@PG
@pytest.mark.parametrize(
    ("status", "headers", "wait"),
    [
        (429, {"Retry-After": "7"}, 7),
        (403, {"Retry-After": "9"}, 9),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "RESET"}, 30),
    ],
    ids=["429-retry-after", "403-retry-after", "403-ratelimit-reset"],
)
async def test_rate_limits_hold_the_installation_for_githubs_delay(
    settings: Settings, tmp_path: Path, status: int, headers: dict[str, str], wait: float
) -> None:
    async with github_world(settings, tmp_path) as world, wired(world) as w:
        headers = {k: v.replace("RESET", str(int(time.time()) + 30)) for k, v in headers.items()}
        world.fake.fail(
            "POST", COMMENTS, status, headers=headers, body={"message": "API rate limit exceeded"}
        )
        await _task(w)
        await w["sender"].tick()
        (row,) = await _rows(w, "github:comment:")
        assert row.state == "pending" and "rate limit" in (row.last_error or "")
        delay = (row.next_attempt_at - utcnow()).total_seconds()
        assert wait - 3 <= delay <= wait + 1
        assert world.fake.issue_comments(REPO, 1) == []
        # Until then, this process does not spend the budget again: calls fail fast, unsent.
        before = len(world.fake.requests)
        with pytest.raises(GitHubRateLimited):
            await w["svc"].api.create_comment(INSTALLATION, REPO, 1, "x")
        assert len(world.fake.requests) == before


@PG
async def test_502_after_the_write_landed_never_duplicates(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, wired(world) as w:
        world.fake.fail("POST", COMMENTS, 502, apply=True)
        world.fake.fail("POST", r"/check-runs$", 502, apply=True)
        task = await _task(w)
        refs = RefStore(w["services"].sessions)
        rows = {r.key: r for r in await _rows(w, task.id)}
        for key in (f"github:comment:{task.id}", f"github:check:{task.id}"):
            with pytest.raises(RetryLater):
                await w["notifier"].deliver(rows[key], refs)
            await w["notifier"].deliver(rows[key], refs)  # looks first, finds it, edits it
        assert len(world.fake.issue_comments(REPO, 1)) == 1
        assert len(world.fake.calls("issues/create-comment")) == 1
        assert [c["external_id"] for c in world.fake.checks.values()] == [task.id]
        # The pull request too: the create's answer is lost, the retry finds it by its branch.
        world.fake.fail("POST", r"/pulls$", 502, apply=True)
        run = Run(task_id=task.id, attempt=1, instructions="do it")
        push = PushResult(
            changed=True, branch=f"handoff/{task.id}", head_sha="e" * 40, files_changed=["a.py"]
        )
        pull = await w["post_push"].after_push(task, run, push, "did it")
        assert len(world.fake.pulls) == 1 and pull.number == next(iter(world.fake.pulls.values()))["number"]


@PG
async def test_no_blind_retry_of_a_post_on_5xx(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, wired(world) as w:
        world.fake.fail("POST", COMMENTS, 502, times=5)
        with pytest.raises(GitHubUnavailable) as caught:
            await w["svc"].api.create_comment(INSTALLATION, REPO, 1, "hello")
        assert caught.value.uncertain
        assert len(world.fake.calls("issues/create-comment")) == 1


@PG
async def test_token_dying_mid_run_is_reminted_once(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, wired(world) as w:
        api = w["svc"].api
        assert await api.permission(INSTALLATION, REPO, "alice") == "write"
        world.fake.revoke_tokens()  # the cached token now answers 401 "Bad credentials"
        assert await api.permission(INSTALLATION, REPO, "maya") == "maintain"
        assert len(world.fake.calls("apps/create-installation-access-token")) == 2
        # A token too close to its expiry is never handed to a clone or push: a fresh one is minted.
        world.fake.token_ttl = timedelta(minutes=5)
        credentials = w["svc"]
        first = await credentials.client.token(INSTALLATION, REPO, {"contents": "write"})
        second = await credentials.client.token(INSTALLATION, REPO, {"contents": "write"})
        assert first.value != second.value


@PG
async def test_github_size_limits_hold(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, wired(world) as w:
        task = await _task(w)
        annotations = [
            {
                "path": f"f{i}.py",
                "start_line": i + 1,
                "end_line": i + 1,
                "annotation_level": "warning",
                "message": "x",
            }
            for i in range(120)
        ]
        async with w["services"].sessions.begin() as session:
            run = Run(task_id=task.id, attempt=1, error="boom " + "ghs_" + "A" * 40 + " " + "e" * 70_000)
            session.add(run)
            await session.flush()
            stored = await session.get(Task, task.id)
            assert stored is not None
            stored.state, stored.summary = "failed", "s" * 70_000
            stored.links = TaskLinks.of(stored).with_(pr_number=3).dump()
            session.add(
                RunEvent(
                    task_id=task.id, run_id=run.id, seq=900, type="result", data={"annotations": annotations}
                )
            )
            session.add(
                RunEvent(
                    task_id=task.id, run_id=run.id, seq=901, type="error", data={"message": "m" * 70_000}
                )
            )
        refs = RefStore(w["services"].sessions)
        rows = {r.key: r for r in await _rows(w, task.id)}
        await w["notifier"].deliver(rows[f"github:comment:{task.id}"], refs)
        await w["notifier"].deliver(rows[f"github:check:{task.id}"], refs)
        (comment,) = world.fake.issue_comments(REPO, 1)
        assert len(comment["body"]) <= 65_536 and "ghs_AAAA" not in comment["body"]
        (check,) = world.fake.checks.values()
        assert len(check["annotations"]) == 120 and check["conclusion"] == "failure"
        sizes = [
            len((r.body or {}).get("output", {}).get("annotations", []))
            for r in world.fake.requests
            if "check-runs" in r.path
        ]
        assert sizes == [50, 50, 20]
        assert len(check["output"]["summary"]) <= 65_535 and len(check["output"]["text"]) <= 65_535
