"""The Slack test rig: the real app (``web.app.create_app``) with the bot mounted, a fake Slack on
loopback, optionally a real worker (Docker sandbox, outbox sender). No tests here; the
``test_slack_*`` modules import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from arq.worker import func
from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import col

from bot.ingress import INGEST_JOB, RECEIVED
from bot.integration import SlackBot, SlackIntegration
from core.links import PullRequestLink
from core.models import AuditEntry, Delivery, Outbox, Run, Task
from core.ports import PushResult
from core.services import Services
from core.settings import Settings
from jobs.intake import retry_on_outage
from jobs.outbox import OutboxSender
from jobs.queue import RUN_JOB
from jobs.services import WorkerServices
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackSide
from tests.support.env import LiveServer, git, running_worker, write_config
from web.integrations import worker_services

ALICE, BOB, MALLORY, ADMIN = "U01ALICE", "U02BOB", "U03MALLORY", "U0ADMIN"
BOUND, UNBOUND = "C0API", "C0RANDOM"
REPO = "acme/demo"

SLACK_CONFIG: dict[str, Any] = {
    "admins": [ADMIN],
    "allow": [
        {"repos": [REPO], "users": [ALICE]},
        {"repos": ["acme/*"], "usergroups": ["S0BACKEND"]},
    ],
    "channels": {BOUND: REPO},
    "github_logins": {ALICE: "alice"},
    "announce": {"github_tasks": True},
}
FAST_OUTBOX = {"poll_s": 0.05, "max_backoff_s": 1.0, "horizon_s": 60.0}
TASK_ID = re.compile(r"`(t_[0-9a-f]{16})`")


def make_repo(root: Path, name: str = REPO) -> Path:
    """A bare repository at ``root/<owner>/<name>.git`` (what GITHUB_GIT_URL=file://root points at)."""
    bare = root / f"{name}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    git("init", "--bare", "-b", "main", str(bare))
    seed = root / f"seed-{name.replace('/', '-')}"
    git("clone", str(bare), str(seed))
    (seed / "README.md").write_text("# demo\n")
    git("add", "-A", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-m", "initial", cwd=seed)
    git("push", "origin", "main", cwd=seed)
    return bare


def slack_settings(settings: Settings, tmp_path: Path, fake: FakeSlack, **slack: Any) -> Settings:
    """``settings`` with the bot configured against ``fake`` and repositories under ``tmp_path/git``."""
    config = write_config(tmp_path / "handoff-slack.yml", slack={**SLACK_CONFIG, **slack}, outbox=FAST_OUTBOX)
    return settings.model_copy(
        update={
            "handoff_config": config,
            "slack_bot_token": SecretStr(BOT_TOKEN),
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "slack_app_token": SecretStr(APP_TOKEN),
            "slack_api_url": fake.api_url,
            "github_git_url": f"file://{tmp_path / 'git'}",
            "handoff_public_url": "http://handoff.test",
        }
    )


@dataclass
class Slash:
    """A slash command sent to the bot: the acknowledgement and the form it was built from."""

    response: httpx.Response
    body: dict[str, str]

    @property
    def delivery(self) -> str:
        """The request's delivery id."""
        return f"cmd:{self.body['trigger_id']}"

    @property
    def ack(self) -> str:
        """The text of the immediate acknowledgement ("" for an empty one)."""
        return str(self.response.json().get("text", "")) if self.response.content else ""


@dataclass
class Rig:
    """Everything a Slack test touches."""

    settings: Settings
    fake: FakeSlack
    slack: SlackSide
    services: Services
    wc: WorkerServices | None = None
    # A worker runs tasks (the e2e tests); otherwise one only turns requests into tasks.
    runs: bool = False

    async def slash(self, text: str, **kwargs: Any) -> Slash:
        """Send ``/handoff <text>`` (as typed: Slack escapes it) and return the acknowledgement."""
        from urllib.parse import urlencode

        body = self.slack.slash_body(text, **kwargs)
        response = await self.slack.post(urlencode(body).encode(), "application/x-www-form-urlencoded")
        assert response.status_code == 200, response.text
        return Slash(response, body)

    async def handled(self, timeout: float = 20.0) -> list[Delivery]:
        """Until the worker has handled every recorded Slack request (none left ``received``)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.deliveries()
            if all(d.outcome != RECEIVED for d in rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"slack requests not handled: {[(d.id, d.outcome) for d in rows]}")
            await asyncio.sleep(0.02)

    async def answer(self, slash: Slash) -> str:
        """What the command's ``response_url`` received once its request was handled ("" if nothing)."""
        await self.handled()
        await (self.settled() if self.runs else self.drain())
        hook = slash.body["response_url"].rsplit("/", 1)[-1]
        return "\n".join(str(p.get("text", "")) for p in self.fake.hooks[hook].posts)

    async def task_of(self, delivery: str | Slash) -> Task:
        """The task a request created or acted on."""
        await self.handled()
        wanted = delivery.delivery if isinstance(delivery, Slash) else delivery
        [row] = [d for d in await self.deliveries() if d.id == wanted]
        assert row.task_id, (row.id, row.outcome)
        return await self.task(row.task_id)

    async def start(self, text: str, **kwargs: Any) -> Task:
        """``/handoff <text>`` that must start a task: the task."""
        slash = await self.slash(text, **kwargs)
        assert "status follows" in slash.ack, slash.ack
        return await self.task_of(slash)

    @property
    def bot(self) -> SlackBot:
        """The API process's bot."""
        integration = next(i for i in self.services.integrations if isinstance(i, SlackIntegration))
        return integration.bot

    async def rows(self, model: Any, *where: Any) -> list[Any]:
        """Rows of ``model`` (oldest first by primary key)."""
        async with self.services.sessions() as session:
            return list((await session.execute(select(model).where(*where))).scalars())

    async def tasks(self) -> list[Task]:
        """Every task."""
        return sorted(await self.rows(Task), key=lambda t: t.created_at)

    async def task(self, task_id: str) -> Task:
        """One task, fresh."""
        return await self.services.tasks.get(task_id)

    async def deliveries(self) -> list[Delivery]:
        """Every recorded Slack delivery."""
        return await self.rows(Delivery, col(Delivery.source) == "slack")

    async def audit(self, action: str | None = None) -> list[AuditEntry]:
        """Audit entries (of one action)."""
        entries = await self.rows(AuditEntry)
        return [e for e in entries if action is None or e.action == action]

    async def drain(self, timeout: float = 10.0) -> list[Outbox]:
        """Deliver pending outbox rows with the bot's notifier until none is left (no worker)."""
        sender = OutboxSender(self.services.sessions, [self.bot.notifier], self.services.config.outbox)
        deadline = time.monotonic() + timeout
        rows: list[Outbox] = []
        while time.monotonic() < deadline:
            await sender.tick()
            rows = await self.rows(Outbox)
            if all(r.state != "pending" for r in rows):
                return rows
            await asyncio.sleep(0.05)
        raise AssertionError(f"outbox not drained: {[(r.id, r.key, r.state, r.last_error) for r in rows]}")

    async def wait_task(self, task_id: str, states: set[str], timeout: float = 60.0) -> Task:
        """Until the task is in one of ``states``."""
        deadline = time.monotonic() + timeout
        task = await self.task(task_id)
        while task.state not in states:
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} is {task.state} ({task.state_reason}); wanted {states}")
            await asyncio.sleep(0.05)
            task = await self.task(task_id)
        return task

    async def settled(self, timeout: float = 15.0) -> list[Outbox]:
        """Until the worker's sender has delivered every row (none pending)."""
        await self.handled()
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.rows(Outbox)
            if rows and all(r.state != "pending" for r in rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"outbox pending: {[(r.key, r.state, r.last_error) for r in rows]}")
            await asyncio.sleep(0.05)


def task_id_in(text: str) -> str:
    """The task id a reply names."""
    match = TASK_ID.search(text)
    assert match, text
    return match.group(1)


class FakePullRequests:
    """A post-push hook standing in for the GitHub App: "opens" a PR for each pushed branch."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    async def after_push(
        self, task: Task, run: Run, push: PushResult, summary: str | None
    ) -> PullRequestLink:
        self.opened.append(push.branch)
        return PullRequestLink(url="https://github.com/acme/demo/pull/7", number=7)


@contextlib.asynccontextmanager
async def slack_rig(
    settings: Settings, tmp_path: Path, *, worker: bool = False, **slack: Any
) -> AsyncIterator[Rig]:
    """The API with the bot on a live port, a fake Slack, and (``worker``) a worker with a sender."""
    from web.app import create_app

    fake = FakeSlack()
    fake.usergroups["S0BACKEND"] = []
    async with LiveServer(fake.app) as fake_server:
        fake.bind(fake_server.url)
        configured = slack_settings(settings, tmp_path, fake, **slack)
        app = create_app(configured)
        async with LiveServer(app) as api:
            side = SlackSide(fake, f"{api.url}/slack/events")
            services: Services = app.state.services
            try:
                wc: WorkerServices = worker_services(configured)
                if not worker:
                    # Only turns recorded requests into tasks: runs stay queued, and the test
                    # delivers the outbox itself (rig.drain), so no sender runs here.
                    bot = next(i for i in wc.integrations if isinstance(i, SlackIntegration))
                    functions = [
                        func(retry_on_outage(bot.jobs[INGEST_JOB]), name=INGEST_JOB),
                        func(_not_run, name=RUN_JOB),
                    ]
                    async with running_worker(
                        configured, ctx={"handoff": wc}, functions=functions, cron_jobs=[], on_startup=None
                    ):
                        yield Rig(configured, fake, side, services, wc)
                    return
                wc.post_push.append(FakePullRequests())
                async with running_worker(configured, ctx={"handoff": wc}):
                    yield Rig(configured, fake, side, services, wc, runs=True)
            finally:
                await side.aclose()


async def _not_run(ctx: dict[str, Any], *args: Any) -> str:
    """Stands in for run_task where no run is wanted: the task stays queued."""
    return "not run here"
