"""fix-ci end to end: a Handoff pull request's CI fails (recorded ``check_suite.completed`` and
``workflow_run.completed`` payloads, sent by the App's bot as GitHub does for its own pushes) →
what failed is collected from the fake GitHub (check runs, annotations, Actions jobs and the job log
behind its redirect) → the task gets a follow-up and pushes a fix to the same branch → after
``max_attempts``, or when the same failure repeats, Handoff stops and says so on the pull request."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from core.models import Task
from core.settings import Settings
from tests.support.automations import automation_world, firings
from tests.support.env import git
from tests.support.github import REPO, World, handoff_api, handoff_worker, until

PG = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
ACTIONS = {"id": 15368, "slug": "github-actions", "name": "GitHub Actions"}
_IDS = itertools.count(7000)


def rule(max_attempts: int = 2) -> dict[str, Any]:
    return {
        "name": "fix-ci",
        "events": ["check_suite.completed", "workflow_run.completed"],
        "if": {"conclusion": "failure", "branch": "handoff/*"},
        "do": "fix-ci",
        "max_attempts": max_attempts,
    }


def log(*lines: str) -> str:
    stamped = [f"2024-05-01T10:00:{i:02d}.0000000Z {line}" for i, line in enumerate(lines)]
    return "\n".join(stamped) + "\n"


async def _handoff_pr(world: World, client: Any) -> tuple[Task, dict[str, Any]]:
    """A task started by a label, its branch pushed and its draft pull request opened."""
    labeled = world.payload(
        "issues",
        "labeled",
        issue={"number": 1, "title": "Add the widget", "body": "", "pull_request": None},
        label={"name": "handoff"},
    )
    await world.send(client, "issues", labeled)
    task = await world.task_in({"succeeded"}, timeout=90)
    (pr,) = world.fake.pulls.values()
    await world.outbox_idle()
    return task, pr


def _head(world: World, task: Task) -> str:
    return git("--git-dir", str(world.bare), "rev-parse", f"handoff/{task.id}")


def _linked(task: Task, pr: dict[str, Any], sha: str) -> list[dict[str, Any]]:
    side = {"ref": f"handoff/{task.id}", "sha": sha, "repo": {"id": 1, "name": "widgets"}}
    return [{"number": pr["number"], "head": side, "base": {"ref": "main", "sha": "c" * 40}}]


def suite_failed(world: World, task: Task, pr: dict[str, Any], title: str, message: str) -> dict[str, Any]:
    """A failed check suite of GitHub Actions on the task branch's head, with one failed run."""
    sha, suite, run = _head(world, task), next(_IDS), next(_IDS)
    world.fake.add_suite(
        REPO,
        suite,
        [
            {
                "id": run,
                "name": "test",
                "head_sha": sha,
                "status": "completed",
                "conclusion": "failure",
                "app": ACTIONS,
                "output": {"title": title, "summary": "pytest failed", "text": None},
            }
        ],
    )
    world.fake.checks[run]["annotations"] = [
        {
            "path": "widget.py",
            "start_line": 3,
            "end_line": 3,
            "annotation_level": "failure",
            "message": message,
        }
    ]
    world.fake.job_logs[run] = log(
        "##[group]Run pytest", f"FAILED tests/test_widget.py - {message}", "##[error]exit 1"
    )
    return world.payload(
        "check_suite",
        "completed",
        sender="handoff[bot]",
        check_suite={
            "id": suite,
            "head_branch": f"handoff/{task.id}",
            "head_sha": sha,
            "status": "completed",
            "conclusion": "failure",
            "pull_requests": _linked(task, pr, sha),
            "app": ACTIONS,
        },
    )


def run_failed(world: World, task: Task, pr: dict[str, Any], step: str, message: str) -> dict[str, Any]:
    """A failed workflow run with one failed job (its failing step's lines in the job log)."""
    sha, run, job = _head(world, task), next(_IDS), next(_IDS)
    world.fake.run_jobs[run] = [
        {
            "id": job,
            "run_id": run,
            "name": "lint",
            "status": "completed",
            "conclusion": "failure",
            "steps": [
                {
                    "name": "Checkout",
                    "number": 1,
                    "conclusion": "success",
                    "started_at": "2024-05-01T10:00:00Z",
                    "completed_at": "2024-05-01T10:00:01Z",
                },
                {
                    "name": step,
                    "number": 2,
                    "conclusion": "failure",
                    "started_at": "2024-05-01T10:00:02Z",
                    "completed_at": "2024-05-01T10:00:04Z",
                },
            ],
        }
    ]
    world.fake.job_logs[job] = log(
        "checking out", "secret checkout noise", f"##[group]Run {step}", message, "##[error]exit 2"
    )
    payload = world.payload("workflow_run", "completed", sender="handoff[bot]")
    payload["workflow_run"].update(
        id=run,
        name="CI",
        head_branch=f"handoff/{task.id}",
        head_sha=sha,
        status="completed",
        conclusion="failure",
        event="push",
        pull_requests=_linked(task, pr, sha),
        head_repository={"full_name": REPO, "name": "widgets"},
        check_suite_id=next(_IDS),
    )
    return payload


def _fix_comments(world: World, pr: dict[str, Any]) -> list[str]:
    return [c["body"] for c in world.fake.issue_comments(REPO, pr["number"]) if "CI" in c["body"]]


async def _attempts(world: World, n: int) -> Task:
    async def check() -> Task | None:
        (task,) = await world.tasks()
        return task if task.attempts >= n and task.finished_at is not None else None

    found: Task = await until(check, 90)
    await world.outbox_idle()
    return found


@PG
async def test_failed_ci_on_a_handoff_pr_is_fixed_on_the_same_branch_until_max_attempts(
    settings: Settings, tmp_path: Path
) -> None:
    async with automation_world(settings, tmp_path, [rule(max_attempts=2)]) as world:
        world.fake.files[(REPO, ".handoff.yml")] = "agent: fixer\n"
        async with handoff_api(world) as client, handoff_worker(world):
            task, pr = await _handoff_pr(world, client)
            first_head = _head(world, task)
            # 1: a check suite fails (check run output, annotation and the Actions job log).
            await world.send(
                client, "check_suite", suite_failed(world, task, pr, "1 test failed", "assert 41 == 42")
            )
            task = await _attempts(world, 2)
            assert task.state == "succeeded", task.state_reason
            fix = git("--git-dir", str(world.bare), "show", f"handoff/{task.id}:FIX.md")
            assert "1 test failed" in fix and "widget.py:3: failure: assert 41 == 42" in fix
            assert "FAILED tests/test_widget.py - assert 41 == 42" in fix  # the job log, via its redirect
            assert '<untrusted-data source="ci">' in fix
            second_head = _head(world, task)
            parents = git("--git-dir", str(world.bare), "rev-list", "--parents", "-n1", second_head).split()
            assert parents[1] == first_head  # a new commit on top of the same branch, not a new branch
            # 2: a workflow run fails differently: its failing step's lines reach the agent.
            await world.send(
                client, "workflow_run", run_failed(world, task, pr, "Run ruff", "E501 line too long")
            )
            task = await _attempts(world, 3)
            fix = git("--git-dir", str(world.bare), "show", f"handoff/{task.id}:FIX.md")
            assert "--- step: Run ruff ---" in fix and "E501 line too long" in fix
            assert "secret checkout noise" not in fix  # trimmed to the failing step
            # 3: it fails again: max_attempts (2) reached, nothing runs, the PR is told.
            third = suite_failed(world, task, pr, "still failing", "assert 1 == 2")
            await world.send(client, "check_suite", third)
            await world.handled(world._deliveries[-1])
            # A repeat of the same delivery's check suite (same head) fires nothing either.
            await world.send(client, "check_suite", third)
            await world.handled(world._deliveries[-1])
            await world.outbox_idle()
        (task,) = await world.tasks()
        assert task.attempts == 3 and len(world.fake.pulls) == 1
        comments = _fix_comments(world, pr)
        assert "attempt 1 of 2" in comments[0] and "attempt 2 of 2" in comments[1]
        assert (
            "stopped fixing CI here: max_attempts reached: 2 fixes tried" in comments[2]
            and len(comments) == 3
        )
        decisions = [(f.decision, f.reason) for f in await firings(world)]
        assert [d for d, _ in decisions] == ["fired", "fired", "skipped", "skipped"]
        assert decisions[3][1] is not None and "max_attempts reached" in decisions[3][1]
        assert not world.fake.errors


@PG
async def test_fix_ci_stops_when_the_same_failure_repeats(settings: Settings, tmp_path: Path) -> None:
    async with automation_world(settings, tmp_path, [rule(max_attempts=5)]) as world:
        world.fake.files[(REPO, ".handoff.yml")] = "agent: fixer\n"
        async with handoff_api(world) as client, handoff_worker(world):
            task, pr = await _handoff_pr(world, client)
            await world.send(
                client, "check_suite", suite_failed(world, task, pr, "1 test failed", "assert 41 == 42")
            )
            task = await _attempts(world, 2)
            # The fix did not help: the same test fails the same way (the numbers may differ).
            await world.send(
                client, "check_suite", suite_failed(world, task, pr, "1 test failed", "assert 43 == 44")
            )
            await world.handled(world._deliveries[-1])
            await world.outbox_idle()
        (task,) = await world.tasks()
        assert task.attempts == 2
        comments = _fix_comments(world, pr)
        assert "the same failure as attempt 1" in comments[-1] and "`test`" in comments[-1]
