"""The processes' service containers, built from settings: the API's and the worker's.

:func:`build_services` builds the :class:`core.services.Services` every process shares;
:func:`build_worker_services` builds :class:`WorkerServices`, its extension for a worker (built
once in arq's ``on_startup`` and passed to jobs through ``ctx["handoff"]``). Neither does I/O:
connections open lazily.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.config import load_config
from core.db import make_engine, make_sessions
from core.errors import ConfigError, WorkspaceError
from core.journal import Journal
from core.outbox import Notifier
from core.ports import GitCredentials, Integration, PostPush, Sandbox
from core.services import Services
from core.settings import Settings
from core.tasks import TaskService
from jobs.dependencies import DATABASE, DOCKER, REDIS, DependencyGate
from jobs.mirror import MirrorCache
from jobs.queue import ArqQueue
from jobs.sandbox import DockerSandbox
from jobs.workspace import check_workspace_root


def _parts(settings: Settings, sandbox: Sandbox | None) -> dict[str, Any]:
    """The fields of :class:`Services`, built from ``settings``."""
    config = load_config(settings.handoff_config)
    journal = Journal()
    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    queue = ArqQueue(settings.redis_url, settings.handoff_queue_name)
    return {
        "settings": settings,
        "config": config,
        "engine": engine,
        "sessions": sessions,
        "queue": queue,
        "sandbox": sandbox or DockerSandbox(base_url=settings.docker_host, instance=settings.instance_id),
        "tasks": TaskService(sessions, queue, config, journal),
        "journal": journal,
    }


def build_services(settings: Settings, *, sandbox: Sandbox | None = None) -> Services:
    """The API's services (the API needs no Docker, but ``/healthz`` asks it)."""
    return Services(**_parts(settings, sandbox))


@dataclass
class WorkerServices(Services):
    """The services shared by every job of one worker process."""

    queue: ArqQueue
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # task id -> event that stops its container (set by cancel requests and shutdown).
    active: dict[str, asyncio.Event] = field(default_factory=dict)
    shutting_down: bool = False
    last_prune: float = float("-inf")  # loop time of the reaper's last clean-up
    git_credentials: GitCredentials | None = None
    mirrors: MirrorCache | None = None
    post_push: list[PostPush] = field(default_factory=list)
    notifiers: list[Notifier] = field(default_factory=list)
    # Whether Redis, the database and Docker answer; the worker's intake waits on it.
    gate: DependencyGate = field(default_factory=lambda: DependencyGate({}))

    def plug(self, integrations: Sequence[Integration]) -> None:
        """Plug in integrations: their reporters, notifiers, post-push hooks and git credentials."""
        super().plug(integrations)
        self.notifiers.extend(n for i in integrations for n in i.notifiers)
        self.post_push.extend(hook for i in integrations for hook in i.post_push)
        if self.git_credentials is None:
            self.git_credentials = next((i.git_credentials for i in integrations if i.git_credentials), None)


def build_worker_services(settings: Settings, *, sandbox: Sandbox | None = None) -> WorkerServices:
    """The worker's services; :class:`ConfigError` for a workspace directory inside a git repository."""
    try:
        check_workspace_root(settings.handoff_workspace_dir)
    except WorkspaceError as exc:
        raise ConfigError(f"HANDOFF_WORKSPACE_DIR: {exc}") from exc
    parts = _parts(settings, sandbox)
    mirrors = (
        MirrorCache(settings.handoff_mirror_dir, max_bytes=settings.handoff_mirror_max_bytes)
        if settings.handoff_mirror
        else None
    )
    return WorkerServices(
        **parts,
        gate=dependency_gate(parts["engine"], parts["queue"], parts["sandbox"]),
        mirrors=mirrors,
    )


def dependency_gate(engine: AsyncEngine, queue: ArqQueue, sandbox: Sandbox) -> DependencyGate:
    """The gate probing this worker's Redis, database and Docker engine."""

    async def database() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return DependencyGate({REDIS: queue.ping, DATABASE: database, DOCKER: sandbox.ping})
