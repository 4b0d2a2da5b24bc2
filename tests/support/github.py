"""The GitHub test world: a fake GitHub API, a bare git remote, Handoff's API and worker.

Shared by the ``test_github_*`` modules (and benchmarks); ``tests/test_github_fake.py`` checks the
fake itself (it must refuse what GitHub refuses, or the other tests prove nothing).
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import yaml
from arq.worker import func
from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import col

from core.db import make_engine, make_sessions
from core.models import Delivery, Outbox, Task
from core.settings import Settings
from github_app.ingest import INGEST_JOB
from github_app.signature import sign
from tests.fakes.github_api import FakeGitHub
from tests.support.env import SANDBOX_IMAGE, LiveServer, git, running_worker

DATA = Path(__file__).parent.parent / "data" / "github"
APP_ID = 4242
INSTALLATION = 77
REPO = "acme/widgets"
SECRET = "It's a Secret to Everybody"
OLD_SECRET = "previous-secret-still-valid"
SCRIPTED = [
    "sh",
    "-c",
    'printf "%s\\n" "$HANDOFF_INSTRUCTIONS" >> NOTES.md; '
    'echo \'{"type": "result", "data": {"summary": "noted the request"}}\'',
]


@cache
def rsa_keys() -> tuple[str, str]:
    """A 2048-bit RSA key pair (private PEM, public PEM), made once per test session."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@cache
def corpus(name: str = "api.github.com") -> list[dict[str, Any]]:
    """The ``@octokit/webhooks-examples`` definitions vendored for ``name``."""
    with gzip.open(DATA / f"webhooks-examples-{name}.json.gz", "rt") as f:
        data: list[dict[str, Any]] = json.load(f)
    return data


def example(event: str, action: str | None = None) -> dict[str, Any]:
    """A deep copy of the first corpus example of ``event`` (and ``action``)."""
    for definition in corpus():
        if definition["name"] == event:
            for ex in definition["examples"]:
                if action is None or ex.get("action") == action:
                    return copy.deepcopy(ex)
    raise KeyError(f"{event}.{action}")


def handoff_config(path: Path, **github: Any) -> Path:
    """A handoff.yml with fast test profiles, an instant outbox and a ``github:`` section."""
    limits = {"memory": "128m", "pids": 64, "cpus": 1.0, "timeout_s": 30, "tmpfs_size": "16m"}
    config = {
        "default_profile": "shell",
        "limits": {
            "max_running": 4,
            "per_repo": 4,
            "heartbeat_s": 1,
            "stale_after_s": 5,
            "shutdown_grace_s": 2,
        },
        "profiles": {
            "shell": {"image": SANDBOX_IMAGE, "limits": limits},
            "scripted": {"image": SANDBOX_IMAGE, "command": SCRIPTED, "limits": limits},
        },
        "outbox": {"github_object_interval_s": 0, "github_creates_per_minute": 60000, "poll_s": 0.05},
        "github": {"write_interval_s": 0, **github},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class World:
    """One test's GitHub world."""

    fake: FakeGitHub
    settings: Settings
    remotes: Path
    api_url: str = ""
    _deliveries: list[str] = field(default_factory=list)

    @property
    def bare(self) -> Path:
        """The bare repository standing in for github.com/acme/widgets."""
        return self.remotes / "acme" / "widgets.git"

    def payload(
        self, event: str, action: str | None, sender: str = "alice", **changes: Any
    ) -> dict[str, Any]:
        """A corpus example re-targeted at acme/widgets, installation 77, sent by ``sender``."""
        data = example(event, action)
        data["installation"] = {"id": INSTALLATION, "node_id": "x"}
        data["sender"] = {"login": sender, "id": hash(sender) % 10_000, "type": "User"}
        if "repository" in data:
            data["repository"].update(
                name="widgets",
                full_name=REPO,
                default_branch="main",
                owner={"login": "acme", "type": "Organization"},
            )
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        return data

    async def send(
        self,
        client: httpx.AsyncClient,
        event: str,
        payload: dict[str, Any] | bytes,
        *,
        delivery: str | None = None,
        secret: str = SECRET,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a signed delivery to the webhook, as GitHub would."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        delivery = delivery or str(uuid.uuid4())
        self._deliveries.append(delivery)
        sent = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Hook-ID": "1",
            "X-Hub-Signature-256": sign(secret, body),
            **(headers or {}),
        }
        return await client.post("/github/webhooks", content=body, headers=sent)

    @contextlib.asynccontextmanager
    async def db(self) -> AsyncIterator[Any]:
        """A session on the test database."""
        engine = make_engine(self.settings.database_url)
        try:
            async with make_sessions(engine)() as session:
                yield session
        finally:
            await engine.dispose()

    async def deliveries(self) -> dict[str, Delivery]:
        """Every recorded delivery by id."""
        async with self.db() as session:
            return {d.id: d for d in (await session.execute(select(Delivery))).scalars()}

    async def tasks(self) -> list[Task]:
        """Every task, oldest first."""
        async with self.db() as session:
            return list((await session.execute(select(Task).order_by(col(Task.created_at)))).scalars())

    async def outbox(self, state: str | None = None) -> list[Outbox]:
        """Outbox rows (of one state)."""
        async with self.db() as session:
            query = select(Outbox).order_by(col(Outbox.id))
            if state:
                query = query.where(col(Outbox.state) == state)
            return list((await session.execute(query)).scalars())

    async def handled(self, delivery: str, timeout: float = 20) -> Delivery:
        """Wait until the ingest job recorded an outcome for ``delivery``."""
        found: Delivery = await until(lambda: self._handled(delivery), timeout)
        return found

    async def _handled(self, delivery: str) -> Delivery | None:
        found = (await self.deliveries()).get(delivery)
        return found if found is not None and found.outcome not in (None, "received") else None

    async def task_in(self, states: set[str], timeout: float = 60, index: int = -1) -> Task:
        """Wait until the ``index`` th task is in one of ``states``."""

        async def check() -> Task | None:
            tasks = await self.tasks()
            return tasks[index] if tasks and tasks[index].state in states else None

        task: Task = await until(check, timeout)
        return task

    async def outbox_idle(self, timeout: float = 20) -> None:
        """Wait until no outbox row is pending."""
        await until(lambda: self._idle(), timeout)

    async def _idle(self) -> bool:
        return not await self.outbox("pending")


async def until(predicate: Callable[[], Any], timeout: float = 20, interval: float = 0.05) -> Any:
    """Await ``predicate()`` until it returns something truthy."""
    import asyncio

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if hasattr(last, "__await__"):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")


@contextlib.asynccontextmanager
async def github_world(settings: Settings, tmp_path: Path, **github: Any) -> AsyncIterator[World]:
    """A fake GitHub (serving) with acme/widgets, and settings pointing Handoff at it."""
    remotes = tmp_path / "remotes"
    bare = remotes / "acme" / "widgets.git"
    bare.parent.mkdir(parents=True)
    git("init", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git("clone", str(bare), str(seed))
    (seed / "README.md").write_text("# widgets\n")
    git("add", "-A", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-m", "initial", cwd=seed)
    git("push", "origin", "main", cwd=seed)
    private, public = rsa_keys()
    fake = FakeGitHub(APP_ID, public, remotes=remotes)
    fake.installations.add(INSTALLATION)
    fake.permissions.update(
        {
            (REPO, "alice"): "write",
            (REPO, "maya"): "maintain",
            (REPO, "root"): "admin",
            (REPO, "mallory"): "read",
        }
    )
    async with LiveServer(fake.app) as server:
        world_settings = settings.model_copy(
            update={
                "github_app_id": str(APP_ID),
                "github_private_key": SecretStr(private),
                "github_webhook_secret": SecretStr(f"{SECRET},{OLD_SECRET}"),
                "github_api_url": server.url,
                "github_git_url": f"file://{remotes}",
                "github_app_slug": "handoff",
                "handoff_config": handoff_config(tmp_path / "handoff-github.yml", **github),
            }
        )
        world = World(fake=fake, settings=world_settings, remotes=remotes)
        try:
            yield world
        finally:
            assert fake.errors == [], f"invalid requests reached the fake GitHub: {fake.errors}"


@contextlib.asynccontextmanager
async def handoff_api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """Handoff's API (with the GitHub router) on loopback, and a client for it."""
    from web.app import create_app

    async with LiveServer(create_app(world.settings)) as server:
        world.api_url = server.url
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield client


@contextlib.asynccontextmanager
async def handoff_worker(world: World, **overrides: Any) -> AsyncIterator[Any]:
    """A real arq worker running tasks and ``github_ingest`` jobs, with the outbox sender."""
    from jobs.queue import RUN_JOB
    from jobs.runner import run_task
    from web.integrations import worker_services

    wc = worker_services(world.settings)
    github = next(i for i in wc.integrations if i.name == "github")
    functions = [
        func(run_task, name=RUN_JOB, timeout=330, max_tries=1000),
        func(github.jobs[INGEST_JOB], name=INGEST_JOB, timeout=60, max_tries=3),
    ]
    async with running_worker(
        world.settings, ctx={"handoff": wc}, functions=functions, max_jobs=12, **overrides
    ) as w:
        yield w
