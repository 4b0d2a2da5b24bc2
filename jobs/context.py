"""What a worker needs, built once in arq's ``on_startup`` and passed to jobs through ``ctx``."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.commands import Registry
from core.config import HandoffConfig, load_config
from core.db import Sessions, make_engine, make_sessions
from core.errors import ConfigError, WorkspaceError
from core.handlers import build_registry
from core.journal import Journal
from core.outbox import Notifier, Reporter
from core.ports import GitCredentials, Integration, PostPush, Sandbox
from core.settings import Settings
from core.tasks import TaskService
from jobs.dependencies import DATABASE, DOCKER, REDIS, DependencyGate
from jobs.mirror import MirrorCache
from jobs.queue import ArqQueue
from jobs.sandbox import DockerSandbox
from jobs.workspace import check_workspace_root


@dataclass
class WorkerContext:
    """Services shared by every job of one worker process."""

    settings: Settings
    config: HandoffConfig
    engine: AsyncEngine
    sessions: Sessions
    queue: ArqQueue
    sandbox: Sandbox
    tasks: TaskService
    journal: Journal
    # The one command registry (the integrations read and extend it).
    commands: Registry = field(default_factory=build_registry)
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # task id -> event that stops its container (set by cancel requests and shutdown).
    active: dict[str, asyncio.Event] = field(default_factory=dict)
    shutting_down: bool = False
    last_prune: float = float("-inf")  # loop time of the reaper's last clean-up
    git_credentials: GitCredentials | None = None
    mirrors: MirrorCache | None = None
    post_push: list[PostPush] = field(default_factory=list)
    notifiers: list[Notifier] = field(default_factory=list)
    integrations: list[Integration] = field(default_factory=list)
    # Whether Redis, the database and Docker answer; the worker's intake waits on it.
    gate: DependencyGate = field(default_factory=lambda: DependencyGate({}))

    async def close(self) -> None:
        """Release connections."""
        for integration in self.integrations:
            await integration.aclose()
        await self.queue.close()
        close = getattr(self.sandbox, "close", None)
        if close is not None:
            close()
        await self.engine.dispose()


def attach(wc: WorkerContext, integrations: Sequence[Integration]) -> WorkerContext:
    """Plug integrations (built with ``wc`` as their services) into the worker context."""
    wc.integrations.extend(integrations)
    wc.journal.reporters.extend(r for i in integrations for r in i.reporters)
    wc.notifiers.extend(n for i in integrations for n in i.notifiers)
    wc.post_push.extend(hook for i in integrations for hook in i.post_push)
    if wc.git_credentials is None:
        wc.git_credentials = next((i.git_credentials for i in integrations if i.git_credentials), None)
    return wc


def build_worker_context(
    settings: Settings,
    *,
    sandbox: Sandbox | None = None,
    reporters: Sequence[Reporter] = (),
) -> WorkerContext:
    """Build the worker's services from settings (no I/O: connections open lazily).

    Raises :class:`ConfigError` for a workspace directory inside a git repository.
    """
    try:
        check_workspace_root(settings.handoff_workspace_dir)
    except WorkspaceError as exc:
        raise ConfigError(f"HANDOFF_WORKSPACE_DIR: {exc}") from exc
    config = load_config(settings.handoff_config)
    journal = Journal(reporters)
    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    queue = ArqQueue(settings.redis_url, settings.handoff_queue_name)
    sandbox = sandbox or DockerSandbox(base_url=settings.docker_host, instance=settings.instance_id)
    return WorkerContext(
        settings=settings,
        config=config,
        engine=engine,
        sessions=sessions,
        queue=queue,
        sandbox=sandbox,
        tasks=TaskService(sessions, queue, config, journal),
        journal=journal,
        gate=dependency_gate(engine, queue, sandbox),
        mirrors=MirrorCache(settings.handoff_mirror_dir, max_bytes=settings.handoff_mirror_max_bytes)
        if settings.handoff_mirror
        else None,
    )


def dependency_gate(engine: AsyncEngine, queue: ArqQueue, sandbox: Sandbox) -> DependencyGate:
    """The gate probing this worker's Redis, database and Docker engine."""

    async def database() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return DependencyGate({REDIS: queue.ping, DATABASE: database, DOCKER: sandbox.ping})
