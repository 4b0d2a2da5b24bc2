"""Slack requests on GitHub repositories, end to end: the fake Slack and the fake GitHub (validated
against GitHub's OpenAPI), Handoff's API, a real worker, Docker sandbox and git.

A mention in a channel bound to ``acme/widgets`` becomes a task with both homes (its thread and the
App's installation on the repository), cloned and pushed with a token minted for that repository,
and a draft pull request whose link appears in the thread; a review comment on that pull request
continues the same task, and the thread hears of it; a follow-up in the thread is announced on
the pull request. A repository the App is not installed on gets the install link.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import SecretStr

from bot.messages import OPEN_PR
from core.settings import Settings
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSide
from tests.support.env import LiveServer, git, running_worker
from tests.support.github import REPO, World, github_world, until
from tests.support.slack import ALICE, BOUND, MALLORY, Rig
from tests.test_slack_e2e import texts
from web.integrations import worker_services

SLACK = {
    "admins": [],
    "allow": [{"repos": [REPO, "acme/elsewhere"], "users": [ALICE]}],
    "channels": {BOUND: REPO},
    "github_logins": {ALICE: "alice"},
}


@dataclass
class Both:
    """The GitHub world and the Slack rig over one Handoff."""

    world: World
    rig: Rig
    github: httpx.AsyncClient  # posts GitHub's webhooks to Handoff


@contextlib.asynccontextmanager
async def slack_on_github(settings: Settings, tmp_path: Path) -> AsyncIterator[Both]:
    """GitHub configured (fake GitHub, bare remotes) and Slack configured (fake Slack), one worker."""
    from web.app import create_app

    async with github_world(settings, tmp_path) as world:
        fake = FakeSlack()
        fake.users.update({ALICE: "alice", MALLORY: "mallory"})
        async with LiveServer(fake.app) as slack_server:
            fake.bind(slack_server.url)
            assert world.settings.handoff_config is not None
            config: dict[str, Any] = yaml.safe_load(world.settings.handoff_config.read_text())
            config["slack"] = SLACK
            config["outbox"] = {**config.get("outbox", {}), "poll_s": 0.05, "max_backoff_s": 1.0}
            path = tmp_path / "handoff-both.yml"
            path.write_text(yaml.safe_dump(config))
            both = world.settings.model_copy(
                update={
                    "handoff_config": path,
                    "slack_bot_token": SecretStr(BOT_TOKEN),
                    "slack_signing_secret": SecretStr(SIGNING_SECRET),
                    "slack_app_token": SecretStr(APP_TOKEN),
                    "slack_api_url": fake.api_url,
                    "handoff_public_url": "http://handoff.test",
                }
            )
            world.settings = both
            app = create_app(both)
            async with LiveServer(app) as api, httpx.AsyncClient(base_url=api.url, timeout=30) as github:
                world.api_url = api.url
                side = SlackSide(fake, f"{api.url}/slack/events")
                wc = worker_services(both)
                try:
                    async with running_worker(both, ctx={"handoff": wc}):
                        rig = Rig(both, fake, side, app.state.services, wc, runs=True)
                        yield Both(world, rig, github)
                finally:
                    await side.aclose()


def _minted(world: World) -> list[dict[str, Any]]:
    return list(world.fake.tokens.values())


async def test_a_mention_becomes_a_draft_pull_request_and_review_comments_continue_it(
    settings: Settings, tmp_path: Path
) -> None:
    async with slack_on_github(settings, tmp_path) as both:
        world, rig = both.world, both.rig
        event = rig.slack.mention("--agent scripted write the widget notes", user=ALICE, channel=BOUND)
        assert (await rig.slack.event(event)).status_code == 200
        await rig.handled()
        [task] = await rig.tasks()
        done = await rig.wait_task(task.id, {"succeeded", "failed"})
        assert done.state == "succeeded", done.state_reason
        await rig.settled()
        # Both homes: the thread it was asked in, and the App's installation on the repository.
        assert done.links["slack"]["channel"] == BOUND and done.links["slack"]["thread_ts"] == event["ts"]
        assert done.links["github"]["installation_id"] == 77 and done.links["github"]["repo"] == REPO
        assert done.requester == "alice" and done.source == "slack"
        # Cloned and pushed with tokens minted for this one repository, never the whole installation.
        minted = _minted(world)
        assert minted and all(t["repositories"] == ["widgets"] for t in minted)
        assert any(t["permissions"] == {"metadata": "read", "contents": "write"} for t in minted)
        notes = git("--git-dir", str(world.bare), "show", f"handoff/{task.id}:NOTES.md")
        assert "write the widget notes" in notes
        # A draft pull request naming who asked and linking the thread.
        (pr,) = world.fake.pulls.values()
        assert (
            pr["draft"] is True and pr["head"]["ref"] == f"handoff/{task.id}" and pr["base"]["ref"] == "main"
        )
        thread_url = f"https://handoff-test.slack.com/archives/{BOUND}/p{event['ts'].replace('.', '')}"
        assert "Requested in Slack by @alice" in pr["body"] and thread_url in pr["body"]
        assert done.pr_url == pr["html_url"]
        # The thread: the status message with an Open pull request button, and the link as a reply.
        thread = rig.fake.thread(BOUND, event["ts"])
        status = thread[0]
        assert any(
            e.get("action_id") == OPEN_PR and e.get("url") == pr["html_url"]
            for b in status.blocks or []
            if b["type"] == "actions"
            for e in b["elements"]
        )
        assert any("Pull request opened" in t and pr["html_url"] in t for t in texts(thread))

        # A review comment on that pull request continues the same task, and the thread hears of it.
        review = world.payload(
            "pull_request_review_comment",
            "created",
            comment={
                "id": 88,
                "body": "Also list the sizes",
                "path": "NOTES.md",
                "line": 1,
                "original_line": 1,
                "diff_hunk": "@@ -0,0 +1 @@\n+notes",
                "user": {"login": "alice", "type": "User", "id": 1},
            },
            pull_request={
                "number": pr["number"],
                "html_url": pr["html_url"],
                "head": {"ref": f"handoff/{task.id}", "sha": "d" * 40, "repo": {"full_name": REPO}},
                "base": {"ref": "main", "sha": "c" * 40, "repo": {"full_name": REPO}},
            },
        )
        assert (await world.send(both.github, "pull_request_review_comment", review)).status_code == 202
        await until(lambda: _attempts(rig, task.id, 2), timeout=60)
        done = await rig.wait_task(task.id, {"succeeded", "failed"})
        assert done.state == "succeeded", done.state_reason
        await rig.settled()
        await world.outbox_idle()
        assert len(await rig.tasks()) == 1 and len(world.fake.pulls) == 1
        notes = git("--git-dir", str(world.bare), "show", f"handoff/{task.id}:NOTES.md")
        assert "Also list the sizes" in notes
        heard = [t for t in texts(rig.fake.thread(BOUND, event["ts"])) if "Follow-up from" in t]
        assert len(heard) == 1 and "*alice* on GitHub" in heard[0] and "Also list the sizes" in heard[0]

        # A follow-up in the thread: the pull request is told, once.
        reply = rig.slack.message(
            "and sort them", user=ALICE, channel=BOUND, channel_type="channel", thread_ts=event["ts"]
        )
        assert (await rig.slack.event(reply)).status_code == 200
        await until(lambda: _attempts(rig, task.id, 3), timeout=60)
        await rig.wait_task(task.id, {"succeeded", "failed"})
        await rig.settled()
        await world.outbox_idle()
        told = [
            c for c in world.fake.issue_comments(REPO, pr["number"]) if "asked for a follow-up" in c["body"]
        ]
        assert len(told) == 1 and "**alice** asked for a follow-up in Slack" in told[0]["body"]
        assert "> and sort them" in told[0]["body"]
        assert "Follow-up from" not in " ".join(
            t for t in texts(rig.fake.thread(BOUND, event["ts"])) if "sort them" in t
        )  # the thread that asked is not told its own follow-up again
        # Slack refused nothing (each run's end reacts ✅ again on the message; Slack's
        # already_reacted answer is expected there and handled).
        rejected = [c.method for c in rig.fake.calls if not c.response.get("ok")]
        assert set(rejected) <= {"reactions.add"} and rig.fake.violations == []


async def _attempts(rig: Rig, task_id: str, n: int) -> bool:
    task = await rig.task(task_id)
    return task.attempts >= n


async def test_a_repository_without_the_app_gets_the_install_link(settings: Settings, tmp_path: Path) -> None:
    async with slack_on_github(settings, tmp_path) as both:
        both.world.fake.uninstalled.add("acme/elsewhere")
        slash = await both.rig.slash("acme/elsewhere fix the build", user=ALICE, channel="C0OTHER")
        answer = await both.rig.answer(slash)
        assert "not installed on `acme/elsewhere`" in answer
        assert "https://github.com/apps/handoff/installations/new" in answer
        assert await both.rig.tasks() == []
        [refused] = await both.rig.audit("slack:work")
        assert refused.decision == "refused" and "not installed" in (refused.reason or "")


async def test_installations_are_cached_briefly_when_missing_and_longer_when_found() -> None:
    from types import SimpleNamespace

    from github_app.repositories import FOUND_TTL_S, MISSING_TTL_S, GitHubRepositories

    now = [0.0]
    asked: list[str] = []
    installed: dict[str, int] = {"acme/api": 7}

    class Api:
        async def installation(self, repo: str) -> int | None:
            asked.append(repo)
            return installed.get(repo)

        async def repository(self, inst: int, repo: str) -> dict[str, Any]:
            return {"full_name": "Acme/API", "default_branch": "trunk"}

    async def revoked(inst: int, repo: str | None) -> bool:
        return False

    svc: Any = SimpleNamespace(revoked=revoked, clone_url=lambda r: f"https://github.com/{r}.git")
    repos = GitHubRepositories(svc, Api(), clock=lambda: now[0])  # type: ignore[arg-type]
    found = await repos.find("acme/api")
    assert found is not None and (found.repo, found.default_branch, found.installation_id) == (
        "Acme/API",
        "trunk",
        7,
    )
    assert await repos.find("acme/web") is None
    await repos.find("ACME/api")
    await repos.find("acme/web")
    assert asked == ["acme/api", "acme/web"]  # both answered from the cache
    installed["acme/web"] = 8  # someone installed the App on it
    now[0] = MISSING_TTL_S + 1
    assert await repos.find("acme/web") is not None and asked[-1] == "acme/web"
    now[0] = FOUND_TTL_S + 1
    await repos.find("acme/api")
    assert asked.count("acme/api") == 2
    assert repos.hosts("acme/api") and not repos.hosts("/srv/git/api") and not repos.hosts("acme/..")
