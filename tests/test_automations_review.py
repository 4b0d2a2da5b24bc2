"""Review mode end to end: recorded ``pull_request`` payloads → a rule fires → the agent reviews the
head in the sandbox (and pushes nothing) → one review with inline comments on the right lines, a
"Handoff review" check run with annotations 50 per request, one summary comment — and a second push
updates all of that instead of piling up reviews."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.links import AutomationLinks, TaskLinks
from core.models import AuditEntry, Task, TaskSource
from core.review import DiffMap
from core.review_records import ReviewRecords
from core.settings import Settings
from core.tasks import NewTask
from jobs.services import build_services
from tests.fakes.llm import Call, FakeLLM, Reply
from tests.support.agents import agent_settings, handoff, python_repo
from tests.support.automations import added_patch, automation_world, firings, pull_request, push
from tests.support.env import LiveServer, git
from tests.support.github import REPO, World, handoff_api, handoff_worker, until
from tests.support.waiting import wait_for

PG = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
RULE = {
    "name": "review-prs",
    "events": ["pull_request.opened", "pull_request.synchronize"],
    "if": {"draft": False, "author_permission": "write", "paths": ["src/**"], "labels_absent": ["no-review"]},
    "do": "review",
    "agent": "reviewer",
    "budget": {"max_cost_usd": 0.5},
}
APP = [f"value_{i} = {i}" for i in range(1, 61)]


def result(findings: list[dict[str, Any]]) -> str:
    return (
        json.dumps({"type": "result", "data": {"summary": "Reviewed the change.", "findings": findings}})
        + "\n"
    )


def first_findings() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {
            "path": "src/app.py",
            "line": i,
            "severity": "warning",
            "title": f"value {i}",
            "body": f"value_{i} is unused",
        }
        for i in range(1, 57)
    ]
    found.append(
        {
            "path": "src/app.py",
            "start_line": 57,
            "line": 58,
            "severity": "error",
            "title": "merge these",
            "body": "Two constants where one would do.",
            "suggestion": "value_57 = value_58 = 57",
        }
    )
    found.append(
        {"path": "README.md", "line": 1, "severity": "info", "body": "The README needs a usage section."}
    )
    found.append({"path": "../../etc/passwd", "line": 1, "body": "outside the repository"})
    return found


def _summaries(world: World, number: int) -> list[dict[str, Any]]:
    return [
        c for c in world.fake.issue_comments(REPO, number) if "handoff:github:review-summary:" in c["body"]
    ]


def _review_checks(world: World) -> list[dict[str, Any]]:
    return [c for c in world.fake.checks.values() if c.get("name") == "Handoff review"]


async def _done(world: World, count: int) -> list[Task]:
    async def check() -> list[Task] | None:
        tasks = [t for t in await world.tasks() if t.source == "github_automation"]
        return tasks if len(tasks) >= count and tasks[count - 1].finished_at is not None else None

    tasks: list[Task] = await until(check, 90)
    await world.outbox_idle(30)
    return tasks


@PG
async def test_review_posts_inline_comments_and_a_check_and_a_second_push_updates_them(
    settings: Settings, tmp_path: Path
) -> None:
    async with automation_world(settings, tmp_path, [RULE]) as world:
        fake = world.fake
        sha1 = push(
            world,
            tmp_path,
            "feature",
            {"src/app.py": "\n".join(APP) + "\n", ".review/result.json": result(first_findings())},
        )
        fake.add_pull(REPO, 7, "feature", sha=sha1)
        fake.set_files(REPO, 7, [{"filename": "src/app.py", "status": "added", "patch": added_patch(APP)}])
        async with handoff_api(world) as client, handoff_worker(world):
            response = await world.send(
                client, "pull_request", pull_request(world, "opened", 7, "feature", sha1)
            )
            assert response.status_code == 202
            (first,) = await _done(world, 1)
            assert first.state == "succeeded", first.state_reason

            # -- the first review ------------------------------------------------------------
            (review,) = fake.reviews.values()
            assert review["commit_id"] == sha1 and review["state"] == "COMMENTED"
            comments = [
                c for c in fake.review_comments.values() if c["pull_request_review_id"] == review["id"]
            ]
            assert len(comments) == 57  # 56 single lines and one range; README and ../ are not inline
            by_line = {c["line"]: c for c in comments}
            assert "value_3 is unused" in by_line[3]["body"] and by_line[3]["side"] == "RIGHT"
            ranged = by_line[58]
            assert (
                ranged["start_line"] == 57
                and "```suggestion\nvalue_57 = value_58 = 57\n```" in ranged["body"]
            )
            # The check run: annotations for every finding, at most 50 per request.
            (check,) = _review_checks(world)
            assert check["head_sha"] == sha1 and check["conclusion"] == "neutral"
            assert len(check["annotations"]) == 58
            writes = [r for r in fake.requests if r.op in ("checks/create", "checks/update")]
            sizes = [len((r.body.get("output") or {}).get("annotations", [])) for r in writes]
            assert max(sizes) == 50 and sum(sizes) == 58
            # One summary comment, with the finding outside the diff; no tracking comment, no task check.
            (summary,) = _summaries(world, 7)
            assert f"Reviewed `{sha1[:7]}`: 58 findings" in summary["body"]
            assert "`README.md:1`" in summary["body"] and "usage section" in summary["body"]
            assert not [c for c in fake.issue_comments(REPO, 7) if "handoff:github:comment:" in c["body"]]
            assert not [c for c in fake.checks.values() if c.get("name") == "Handoff"]
            # Review mode pushed nothing, although the agent changed README.md.
            assert "handoff/" not in git("ls-remote", "--heads", str(world.bare))
            # The agent's instructions had the diff, fenced; the PR's own text fenced too.
            assert (
                "value_60 = 60" in first.instructions
                and '<untrusted-data source="pull request diff">' in first.instructions
            )
            assert first.instructions.count("</untrusted-data>") == 2

            # -- a second push: only what is new is posted, what is gone is resolved ------------
            kept = first_findings()[:50]
            more = ["def more():", "    return 1", ""]
            new = [
                {"path": "src/more.py", "line": 2, "severity": "info", "body": "Return a named constant."},
                {"path": "src/more.py", "line": 1, "severity": "warning", "body": "Missing docstring."},
            ]
            sha2 = push(
                world,
                tmp_path,
                "feature",
                {"src/more.py": "\n".join(more), ".review/result.json": result(kept + new)},
            )
            fake.set_files(
                REPO,
                7,
                [
                    {"filename": "src/app.py", "status": "added", "patch": added_patch(APP)},
                    {"filename": "src/more.py", "status": "added", "patch": added_patch(more[:2])},
                ],
                sha=sha2,
            )
            await world.send(client, "pull_request", pull_request(world, "synchronize", 7, "feature", sha2))
            tasks = await _done(world, 2)
            assert tasks[1].state == "succeeded", tasks[1].state_reason

        reviews = list(fake.reviews.values())
        assert len(reviews) == 2 and reviews[1]["commit_id"] == sha2
        second = [c for c in fake.review_comments.values() if c["pull_request_review_id"] == reviews[1]["id"]]
        assert sorted((c["path"], c["line"]) for c in second) == [("src/more.py", 1), ("src/more.py", 2)]
        # Findings 51-56 and the range are gone: their 7 threads resolved (and said so); 52 stay open.
        resolved = [c for c in fake.review_comments.values() if c["_resolved"]]
        assert sorted(c["line"] for c in resolved) == [51, 52, 53, 54, 55, 56, 58]
        assert all(c["body"].startswith("✅ Resolved by Handoff") for c in resolved)
        assert len(fake.open_threads(REPO, 7)) == 52
        # Still one summary comment, edited in place; one review check run per head commit.
        (summary,) = _summaries(world, 7)
        assert f"`{sha2[:7]}`: 52 findings" in summary["body"], summary["body"]
        assert "7 earlier thread(s) resolved" in summary["body"], summary["body"]
        assert sorted(c["head_sha"] for c in _review_checks(world)) == sorted([sha1, sha2])
        decisions = [(f.rule, f.decision, f.event) for f in await firings(world)]
        assert decisions == [
            ("review-prs", "fired", "pull_request.opened"),
            ("review-prs", "fired", "pull_request.synchronize"),
        ]
        async with world.db() as session:
            audit = [(a.action, a.decision) for a in (await session.execute(select(AuditEntry))).scalars()]
        assert audit.count(("automation", "fired")) == 2


@PG
async def test_rules_filter_and_the_apps_own_push_never_triggers(settings: Settings, tmp_path: Path) -> None:
    on_push = {
        "name": "on-push",
        "events": ["push"],
        "do": "work",
        "instructions": "Check {head_ref}",
        "agent": "fixer",
    }
    async with automation_world(settings, tmp_path, [RULE, on_push]) as world:
        sha = push(world, tmp_path, "docs", {"docs/a.md": "x\n"})
        world.fake.add_pull(REPO, 8, "docs", sha=sha)
        world.fake.set_files(
            REPO, 8, [{"filename": "docs/a.md", "status": "added", "patch": added_patch(["x"])}]
        )
        async with handoff_api(world) as client, handoff_worker(world):
            sent = [
                # The App's own push to a pull request (its synchronize and its push event).
                ("pull_request", pull_request(world, "synchronize", 8, "docs", sha, sender="handoff[bot]")),
                (
                    "push",
                    {
                        **world.payload("push", None, sender="handoff[bot]"),
                        "ref": "refs/heads/docs",
                        "after": sha,
                    },
                ),
                # Another bot, a draft, a label that opts out, an outsider, paths that do not match.
                ("pull_request", pull_request(world, "opened", 8, "docs", sha, sender="renovate[bot]")),
                ("pull_request", pull_request(world, "opened", 8, "docs", sha, draft=True)),
                ("pull_request", pull_request(world, "opened", 8, "docs", sha, labels=("no-review",))),
                ("pull_request", pull_request(world, "opened", 8, "docs", sha, author="mallory")),
                ("pull_request", pull_request(world, "opened", 8, "docs", sha)),
            ]
            ids = []
            for event, payload in sent:
                response = await world.send(client, event, payload)
                assert response.status_code == 202, response.text
                ids.append(world._deliveries[-1])
            for delivery in ids:
                await world.handled(delivery)
        assert [t for t in await world.tasks()] == []
        # Deliveries are handled concurrently: compare the decisions, not their order.
        reasons = sorted(str(f.reason) for f in await firings(world))
        assert reasons == sorted(
            [
                "sent by the App itself",
                "sent by the App itself",
                "sent by the bot renovate[bot] (a rule opts bots in with `bots:`)",
                "the pull request is a draft",
                "label no-review is present",
                "mallory has role read, below write",
                "no changed file matches src/**",
            ]
        )
        async with world.db() as session:
            skipped = [
                a for a in (await session.execute(select(AuditEntry))).scalars() if a.action == "automation"
            ]
        assert [a.decision for a in skipped] == ["skipped"] * 7
        assert {a.data["rule"] for a in skipped if a.reason == "sent by the App itself"} == {
            "review-prs",
            "on-push",
        }
        assert not world.fake.reviews and "handoff/" not in git("ls-remote", "--heads", str(world.bare))


async def test_the_built_in_agent_reviews_with_report_findings_and_cannot_write(
    sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str
) -> None:
    fake = FakeLLM()
    fake.add(
        Reply("Reading the change.", (Call("read_file", {"path": "calc.py"}),)),
        # A tool of the working agent: not offered in review mode, so an error, not a write.
        Reply("", (Call("write_file", {"path": "calc.py", "content": "pwned"}),)),
        Reply("", (Call("report_findings", {"summary": "add() subtracts.", "findings": BUILTIN_FINDINGS}),)),
    )
    async with LiveServer(fake.app) as llm:
        settings = agent_settings(sqlite_url, redis_url, tmp_path, llm.url, image=sandbox_image)
        repo = python_repo(tmp_path, {".handoff.yml": "notes: [Review carefully.]\n"})
        async with handoff(settings) as client:
            services = build_services(settings)
            try:
                links = TaskLinks(automation=AutomationLinks(rule="review", mode="review"))
                new = NewTask(
                    repo=str(repo),
                    instructions="Review calc.py.",
                    source=TaskSource.github_automation,
                    links=links,
                    agent="agent",
                )
                task, _ = await services.tasks.create(new)
                await ReviewRecords(services.sessions).start(
                    task.id, str(repo), 1, "review", "a" * 40, DiffMap()
                )
                done = await wait_for(client, task.id, None, timeout=120)
                record = await ReviewRecords(services.sessions).get(task.id)
            finally:
                await services.close()
    assert done["state"] == "succeeded", done
    assert "handoff/" not in git("ls-remote", "--heads", str(repo))
    offered = fake.requests[0].tool_names()
    assert "report_findings" in offered and "write_file" not in offered and "edit_file" not in offered
    assert "You are Handoff's code reviewer" in fake.requests[0].system()
    assert "unknown tool 'write_file'" in json.dumps(fake.requests[2].last_results())
    assert record is not None and record.summary == "add() subtracts."
    assert [f["path"] for f in record.findings] == ["calc.py"]
    assert (
        record.findings[0]["severity"] == "error" and record.findings[0]["suggestion"] == "    return a + b"
    )


BUILTIN_FINDINGS = [
    {
        "path": "calc.py",
        "line": 5,
        "severity": "error",
        "title": "wrong operator",
        "body": "add() returns a - b.",
        "suggestion": "    return a + b",
    },
    {"path": "../outside", "line": 1, "severity": "info", "body": "dropped"},
]
