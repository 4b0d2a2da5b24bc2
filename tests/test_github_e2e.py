"""End to end: signed webhooks → ingest job → real worker and Docker sandbox → local bare remote →
check run, tracking comment and draft pull request on the fake GitHub (validated against OpenAPI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.models import AuditEntry, Task
from core.settings import Settings
from github_app.integration import GitHubIntegration
from tests.support.env import git
from tests.support.github import APP_ID, REPO, World, github_world, handoff_api, handoff_worker, until

PG = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def _checks(world: World, task: Task) -> list[dict[str, Any]]:
    return [c for c in world.fake.checks.values() if c.get("external_id") == task.id]


def _tracking(world: World, number: int) -> list[dict[str, Any]]:
    return [c for c in world.fake.issue_comments(REPO, number) if "handoff:github:comment:" in c["body"]]


def _comment(world: World, number: int, body: str, author: str = "alice", cid: int = 500) -> dict[str, Any]:
    return world.payload(
        "issue_comment",
        "created",
        sender=author,
        issue={
            "number": number,
            "title": f"Issue {number}",
            "pull_request": None,
            "html_url": f"https://github.com/{REPO}/issues/{number}",
        },
        comment={"id": cid, "body": body, "user": {"login": author, "type": "User", "id": 1}},
    )


async def _settled(world: World, task_states: set[str], index: int = -1) -> Task:
    task = await world.task_in(task_states, index=index)
    await world.outbox_idle()
    return task


@PG
async def test_label_runs_the_repo_agent_and_reports_check_comment_and_draft_pr(
    settings: Settings, tmp_path: Path
) -> None:
    async with github_world(settings, tmp_path, models=["claude-sonnet-4"]) as world:
        world.fake.files[(REPO, ".handoff.yml")] = "agent: scripted\nmodel: not-a-real-model\n"
        payload = world.payload(
            "issues",
            "labeled",
            issue={
                "number": 1,
                "title": "Write the notes",
                "body": "Describe the widgets.",
                "pull_request": None,
            },
            label={"name": "handoff"},
        )
        async with handoff_api(world) as client, handoff_worker(world):
            assert (await world.send(client, "issues", payload)).status_code == 202
            task = await _settled(world, {"succeeded", "failed"})
            # The outbox reports the final state after the run: wait for the completed check run.
            await until(lambda: any(c["status"] == "completed" for c in _checks(world, task)))
            await world.outbox_idle()
    assert task.state == "succeeded", task.state_reason
    assert task.agent == "scripted" and task.repo == REPO
    notes = git("--git-dir", str(world.bare), "show", f"handoff/{task.id}:NOTES.md")
    assert "Write the notes" in notes and "Describe the widgets." in notes
    # One draft PR from the task branch, closing the issue.
    (pr,) = world.fake.pulls.values()
    assert pr["draft"] is True and pr["head"]["ref"] == f"handoff/{task.id}" and pr["base"]["ref"] == "main"
    assert "Closes #1" in pr["body"] and task.pr_url == pr["html_url"]
    # One check run on main's head, completed with success and a Retry button.
    (check,) = _checks(world, task)
    main_sha = git("--git-dir", str(world.bare), "rev-parse", "main")
    assert check["head_sha"] == main_sha and check["conclusion"] == "success"
    assert check["details_url"].endswith(f"/tasks/{task.id}") and [
        a["identifier"] for a in check["actions"]
    ] == ["retry"]
    # One tracking comment, edited in place to the end state; the refused model is explained there.
    (tracking,) = _tracking(world, 1)
    assert (
        "Done" in tracking["body"] and pr["html_url"] in tracking["body"] and "NOTES.md" in tracking["body"]
    )
    assert "model `not-a-real-model` is not allowed here" in tracking["body"]
    assert world.fake.calls("issues/update-comment")
    # 👀 on the issue itself (a label has no comment to react to).
    assert [r["content"] for r in world.fake.reactions if r["kind"] == "issue"] == ["eyes"]
    # The git token was scoped to the one repository with contents:write only.
    git_tokens = [t for t in world.fake.tokens.values() if t["permissions"].get("contents") == "write"]
    assert git_tokens and all(t["repositories"] == ["widgets"] for t in git_tokens)
    assert all(set(t["permissions"]) == {"contents", "metadata"} for t in git_tokens)


@PG
async def test_assignment_to_the_app_and_a_comment_command(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world:
        world.fake.files[(REPO, ".handoff.yml")] = "agent: scripted\n"
        assigned = world.payload(
            "issues",
            "assigned",
            issue={"number": 2, "title": "Assigned work", "body": "", "pull_request": None},
            assignee={"login": "handoff[bot]", "type": "Bot", "id": 9},
        )
        async with handoff_api(world) as client, handoff_worker(world):
            await world.send(client, "issues", assigned)
            first = await _settled(world, {"succeeded", "failed"}, index=0)
            await world.send(
                client, "issue_comment", _comment(world, 3, "/handoff --agent shell echo hi > HI.md", cid=31)
            )
            await world.send(client, "issue_comment", _comment(world, 3, "/handoff help", cid=32))
            await until(lambda: _has_task_count(world, 2))
            second = await _settled(world, {"succeeded", "failed"}, index=1)
            await until(
                lambda: any("Handoff commands" in c["body"] for c in world.fake.issue_comments(REPO, 3))
            )
    assert first.state == "succeeded" and "Assigned work" in git(
        "--git-dir", str(world.bare), "show", f"handoff/{first.id}:NOTES.md"
    )
    assert second.state == "succeeded", second.state_reason
    assert git("--git-dir", str(world.bare), "show", f"handoff/{second.id}:HI.md") == "hi"
    reacted = sorted(r["target"] for r in world.fake.reactions if r["kind"] == "issue_comment")
    assert reacted == [31, 32]
    assert len(_tracking(world, 3)) == 1


async def _has_task_count(world: World, n: int) -> bool:
    return len(await world.tasks()) >= n


@PG
async def test_review_comment_on_a_handoff_pr_is_a_follow_up_on_the_same_branch(
    settings: Settings, tmp_path: Path
) -> None:
    async with github_world(settings, tmp_path) as world:
        world.fake.files[(REPO, ".handoff.yml")] = "agent: scripted\n"
        labeled = world.payload(
            "issues",
            "labeled",
            issue={"number": 4, "title": "First pass", "body": "", "pull_request": None},
            label={"name": "handoff"},
        )
        async with handoff_api(world) as client, handoff_worker(world):
            await world.send(client, "issues", labeled)
            task = await _settled(world, {"succeeded", "failed"})
            (pr,) = world.fake.pulls.values()
            review = world.payload(
                "pull_request_review_comment",
                "created",
                comment={
                    "id": 77,
                    "body": "Also list the sizes",
                    "path": "NOTES.md",
                    "line": 1,
                    "original_line": 1,
                    "diff_hunk": "@@ -0,0 +1 @@\n+# First pass",
                    "user": {"login": "alice", "type": "User", "id": 1},
                },
                pull_request={
                    "number": pr["number"],
                    "html_url": pr["html_url"],
                    "head": {"ref": f"handoff/{task.id}", "sha": "d" * 40, "repo": {"full_name": REPO}},
                    "base": {"ref": "main", "sha": "c" * 40, "repo": {"full_name": REPO}},
                },
            )
            assert (await world.send(client, "pull_request_review_comment", review)).status_code == 202
            await until(lambda: _attempts(world, 2))
            task = await _settled(world, {"succeeded", "failed"})
    assert task.state == "succeeded" and task.attempts == 2 and len(await world.tasks()) == 1
    notes = git("--git-dir", str(world.bare), "show", f"handoff/{task.id}:NOTES.md")
    assert (
        "First pass" in notes
        and "Also list the sizes" in notes
        and "Review comment on `NOTES.md` line 1" in notes
    )
    assert len(world.fake.pulls) == 1 and world.fake.calls("pulls/update")
    assert [r["target"] for r in world.fake.reactions if r["kind"] == "review_comment"] == [77]
    assert len(_tracking(world, 4)) == 1


async def _attempts(world: World, n: int) -> bool:
    tasks = await world.tasks()
    return bool(tasks) and tasks[-1].attempts >= n


def _button(world: World, task: Task, identifier: str | None, sender: str = "alice") -> dict[str, Any]:
    action = "requested_action" if identifier else "rerequested"
    extra: dict[str, Any] = {"requested_action": {"identifier": identifier}} if identifier else {}
    return world.payload(
        "check_run",
        action,
        sender=sender,
        check_run={
            "id": 1,
            "external_id": task.id,
            "head_sha": "a" * 40,
            "name": "Handoff",
            "app": {"id": APP_ID},
        },
        **extra,
    )


@PG
async def test_retry_button_and_rerequest_run_the_task_again(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, handoff_api(world) as client, handoff_worker(world):
        await world.send(client, "issue_comment", _comment(world, 5, "/handoff exit 3", cid=51))
        task = await _settled(world, {"failed"})
        await world.send(client, "check_run", _button(world, task, "retry"))
        await until(lambda: _attempts(world, 2))
        await _settled(world, {"failed"})
        await world.send(client, "check_run", _button(world, task, None))
        await until(lambda: _attempts(world, 3))
        task = await _settled(world, {"failed"})
    assert task.attempts == 3 and "exited with code 3" in (task.state_reason or "")
    checks = _checks(world, task)
    assert len(checks) == 3 and all(c["conclusion"] == "failure" for c in checks)
    assert len(_tracking(world, 5)) == 1


@PG
async def test_cancel_command_stops_the_run(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, handoff_api(world) as client, handoff_worker(world):
        await world.send(client, "issue_comment", _comment(world, 6, "/handoff sleep 30", cid=61))
        await world.task_in({"running"})
        await world.send(client, "issue_comment", _comment(world, 6, "/handoff cancel", cid=62))
        task = await _settled(world, {"cancelled"}, index=0)
        await until(lambda: any(c.get("conclusion") == "cancelled" for c in _checks(world, task)))
    assert task.state == "cancelled"


@PG
async def test_outsider_is_told_and_a_maintainer_approves(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, handoff_api(world) as client, handoff_worker(world):
        await world.send(
            client,
            "issue_comment",
            _comment(world, 7, "/handoff echo x > X.md", author="mallory", cid=71),
        )
        waiting = await _settled(world, {"waiting"})
        replies = [c["body"] for c in world.fake.issue_comments(REPO, 7) if "@mallory" in c["body"]]
        assert replies and "/handoff approve" in replies[0]
        # The outsider cannot approve their own request.
        await world.send(
            client, "issue_comment", _comment(world, 7, "/handoff approve", author="mallory", cid=72)
        )
        await until(
            lambda: len([c for c in world.fake.issue_comments(REPO, 7) if "@mallory" in c["body"]]) == 2
        )
        assert (await world.tasks())[0].state == "waiting"
        await world.send(
            client, "issue_comment", _comment(world, 7, "/handoff approve", author="maya", cid=73)
        )
        task = await _settled(world, {"succeeded", "failed"})
    assert task.id == waiting.id and task.state == "succeeded"
    assert git("--git-dir", str(world.bare), "show", f"handoff/{task.id}:X.md") == "x"
    async with world.db() as session:
        decisions = [
            (a.actor, a.action, a.decision) for a in (await session.execute(select(AuditEntry))).scalars()
        ]
    assert ("mallory", "permission", "denied") in decisions and ("maya", "permission", "allowed") in decisions
    assert ("maya", "approve", "allowed") in decisions


@PG
async def test_installation_removed_cancels_and_mints_no_more_tokens(
    settings: Settings, tmp_path: Path
) -> None:
    from github_app.errors import InstallationRevoked

    async with (
        github_world(settings, tmp_path) as world,
        handoff_api(world) as client,
        handoff_worker(world) as worker,
    ):
        await world.send(client, "issue_comment", _comment(world, 8, "/handoff sleep 30", cid=81))
        await world.task_in({"running"})
        deleted = world.payload("installation", "deleted", sender="root")
        await world.send(client, "installation", deleted)
        task = await world.task_in({"cancelled"}, timeout=20)
        svc = next(i for i in worker.ctx["handoff"].integrations if isinstance(i, GitHubIntegration)).github
        minted = len(world.fake.calls("apps/create-installation-access-token"))
        with pytest.raises(InstallationRevoked):
            await svc.client.token(77, REPO, {"contents": "write"})
        assert len(world.fake.calls("apps/create-installation-access-token")) == minted
    assert task.state == "cancelled"


@PG
async def test_closing_the_pr_cancels_its_running_task(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world:
        world.fake.add_pull(REPO, 9, "feature")
        git("--git-dir", str(world.bare), "branch", "feature", "main")
        comment = _comment(world, 9, "/handoff sleep 30", cid=91)
        comment["issue"]["pull_request"] = {"url": f"https://api.github.com/repos/{REPO}/pulls/9"}
        async with handoff_api(world) as client, handoff_worker(world):
            await world.send(client, "issue_comment", comment)
            running = await world.task_in({"running"})
            closed = world.payload(
                "pull_request",
                "closed",
                pull_request={"number": 9, "head": {"ref": "feature", "sha": "b" * 40}},
            )
            assert (await world.send(client, "pull_request", closed)).status_code == 202
            task = await world.task_in({"cancelled"}, timeout=20)
    assert task.id == running.id and task.base_ref == "feature"
