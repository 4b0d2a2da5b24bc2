"""The host an attacking agent faces, the unguarded path each attack is first shown to beat, and
the guarded path: a real Handoff task (REST API → arq worker → Docker sandbox → host git).

The "agent" is the ``shell`` profile: a task's instructions run as a shell script in the busybox
sandbox image, with exactly the powers a real agent has there (uid 1000, no network, read-only
root, the work tree at ``/workspace``). Attack scripts embed host paths because a real attacker's
planted configuration runs — if it runs at all — on the host, where those paths exist.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
from sqlalchemy import select
from sqlmodel import col

from core.db import make_engine, make_sessions
from core.models import RunEvent
from core.settings import Settings, load_settings
from tests.support.env import SANDBOX_IMAGE, LiveServer, git, running_worker, write_config
from tests.support.waiting import TERMINAL, wait_for

CANARY = "canary-5ecr3t-DO-NOT-LEAK"
# The worker's own secrets (settings) and the installation token of the repository.
SECRETS = {
    "slack_bot_token": f"xoxb-{CANARY}-slack",
    "anthropic_api_key": f"sk-ant-{CANARY}-anthropic",
    "openai_api_key": f"sk-{CANARY}-openai",
    "github_webhook_secret": f"whsec-{CANARY}-github",
    "handoff_session_secret": f"session-{CANARY}",
}
TOKEN = f"ghs_{CANARY}_installation"
AUTH_HEADER = f"AUTHORIZATION: bearer {TOKEN}"


@dataclass
class Host:
    """What lives on the worker's host outside the sandbox."""

    root: Path
    origin: Path  # the task's repository (bare)
    other: Path  # another repository on the host (with a work tree), never given to the agent
    other_head: str
    other_secret_sha: str  # a blob only ``other`` holds
    secret_file: Path

    @property
    def other_git(self) -> Path:
        return self.other / ".git"

    def marker(self, name: str) -> Path:
        return self.root / f"pwned-{name}"

    def markers(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("pwned-*"))

    def other_state(self) -> str:
        """Every ref of the other repository and its HEAD."""
        refs = git("--git-dir", str(self.other_git), "for-each-ref", "--format=%(refname) %(objectname)")
        return refs + "\n" + (self.other_git / "HEAD").read_text()

    def reset_other(self) -> None:
        """Undo what an unguarded demonstration did to the other repository."""
        gd = ("--git-dir", str(self.other_git))
        for ref in git(*gd, "for-each-ref", "--format=%(refname)").split():
            if ref != "refs/heads/main":
                git(*gd, "update-ref", "-d", ref)
        git(*gd, "update-ref", "refs/heads/main", self.other_head)
        git(*gd, "symbolic-ref", "HEAD", "refs/heads/main")

    def show(self, ref: str, path: str) -> str:
        """A file of the origin repository at ``ref``."""
        return git("--git-dir", str(self.origin), "show", f"{ref}:{path}")

    def objects(self, ref: str) -> set[str]:
        """Every object reachable from ``ref`` in the origin repository."""
        return set(git("--git-dir", str(self.origin), "rev-list", "--objects", ref).split())

    def files(self, ref: str) -> list[str]:
        return git("--git-dir", str(self.origin), "ls-tree", "-r", "--name-only", ref).split("\n")


def commit_all(cwd: Path, message: str) -> None:
    git("add", "-A", cwd=cwd)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=cwd)


def make_host(root: Path) -> Host:
    """A host with a secret file, the task's repository and another, private repository."""
    root.mkdir()
    secret_file = root / "secret.txt"
    secret_file.write_text(f"host secret {CANARY}\n")
    origin = root / "origin.git"
    git("init", "-q", "--bare", "-b", "main", str(origin))
    seed = root / "seed"
    git("clone", "-q", str(origin), str(seed))
    (seed / "README.md").write_text("# demo\n")
    (seed / ".gitignore").write_text("*.log\n")
    commit_all(seed, "initial")
    git("push", "-q", "origin", "main", cwd=seed)
    other = root / "other"
    git("init", "-q", "-b", "main", str(other))
    (other / "private.txt").write_text(f"private to the host: {CANARY}\n")
    commit_all(other, "private")
    return Host(
        root=root,
        origin=origin,
        other=other,
        other_head=git("rev-parse", "HEAD", cwd=other),
        other_secret_sha=git("rev-parse", "HEAD:private.txt", cwd=other),
        secret_file=secret_file,
    )


# ---------------------------------------------------------------- the unguarded path


def in_sandbox_image(checkout: Path, script: str, *, environment: dict[str, str] | None = None) -> str:
    """Run ``script`` as the agent would (same image, uid 1000, no network) on ``checkout``."""
    client = docker.DockerClient(version="1.41")
    try:
        out = client.containers.run(
            SANDBOX_IMAGE,
            ["sh", "-c", script],
            volumes={str(checkout): {"bind": "/workspace", "mode": "rw"}},
            working_dir="/workspace",
            user="1000:1000",
            network_mode="none",
            environment=environment or {},
            remove=True,
            stdout=True,
            stderr=True,
        )
    finally:
        client.close()
    return out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)


def plain_checkout(host: Host, name: str) -> Path:
    """A plain clone of the task's repository, handed to the sandbox user as a naive host would."""
    path = host.root.parent / f"plain-{name}"
    git("clone", "-q", str(host.origin), str(path))
    subprocess.run(["chown", "-R", "1000:1000", str(path)], check=True)
    return path


def naive_publish(checkout: Path, branch: str = "unguarded", env: dict[str, str] | None = None) -> str:
    """What a host that trusts the checkout does: add, commit and push there, as root, with the
    worker's environment. Returns git's output (failures included)."""
    full = {**os.environ, **(env or {}), "GIT_AUTHOR_NAME": "n", "GIT_AUTHOR_EMAIL": "n@n"}
    full |= {"GIT_COMMITTER_NAME": "n", "GIT_COMMITTER_EMAIL": "n@n", "WORKER_SECRET": CANARY}
    # safe.directory as the old worker set it: the checkout belongs to the sandbox user.
    g = "git -c safe.directory=*"
    script = f"{g} add -A; {g} commit -qm naive; {g} push -q origin HEAD:refs/heads/{branch}"
    done = subprocess.run(
        ["sh", "-c", script], cwd=checkout, env=full, capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr


# ---------------------------------------------------------------- the guarded path


class StaticCredentials:
    """Hands out an installation-token header for every task (a file remote never uses it, but
    every host git call that talks to the remote carries it, as with GitHub)."""

    async def auth_header(self, task: Any) -> str | None:
        return AUTH_HEADER


@dataclass
class Guarded:
    """A running Handoff (API and worker) whose worker holds secrets."""

    client: httpx.AsyncClient
    settings: Settings
    host: Host

    async def run(self, script: str, timeout: float = 90) -> dict[str, Any]:
        """A task whose instructions are ``script``, run to its end."""
        body = {"repo": str(self.host.origin), "instructions": script}
        created = await self.client.post("/api/tasks", json=body)
        assert created.status_code == 201, created.text
        return await wait_for(self.client, created.json()["id"], TERMINAL, timeout=timeout)

    async def events(self, run_id: str) -> list[RunEvent]:
        """Every stored event of a run, straight from the database."""
        engine = make_engine(self.settings.database_url)
        try:
            async with make_sessions(engine)() as session:
                rows = await session.execute(
                    select(RunEvent).where(col(RunEvent.run_id) == run_id).order_by(col(RunEvent.seq))
                )
                return list(rows.scalars())
        finally:
            await engine.dispose()


def branch_of(task: dict[str, Any]) -> str:
    return f"refs/heads/handoff/{task['id']}"


def attack_settings(tmp_path: Path, database_url: str, redis_url: str, **config: Any) -> Settings:
    """Settings holding every kind of secret a worker has."""
    return load_settings(
        database_url=database_url,
        redis_url=redis_url,
        handoff_config=write_config(tmp_path / "handoff.yml", **config),
        handoff_workspace_dir=tmp_path / "workspaces",
        handoff_mirror_dir=tmp_path / "mirrors",
        handoff_queue_name=f"handoff:test:{uuid.uuid4().hex[:8]}",
        handoff_public_url="http://127.0.0.1:8000",
        **SECRETS,
    )


async def guarded(settings: Settings, host: Host) -> AsyncIterator[Guarded]:
    """Serve the API and run a worker (with an installation-token source) for ``settings``."""
    from web.app import create_app
    from web.integrations import worker_services

    wc = worker_services(settings)
    wc.git_credentials = StaticCredentials()
    async with (
        LiveServer(create_app(settings)) as api,
        httpx.AsyncClient(base_url=api.url, timeout=30) as client,
        running_worker(settings, ctx={"handoff": wc}),
    ):
        yield Guarded(client, settings, host)
