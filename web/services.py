"""The composition root's service container, built once in the FastAPI lifespan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from core.commands import Registry
from core.config import HandoffConfig, load_config
from core.db import Sessions, make_engine, make_sessions
from core.handlers import build_registry
from core.journal import Journal
from core.outbox import Reporter
from core.ports import Integration, Queue, Sandbox
from core.settings import Settings
from core.tasks import TaskService
from jobs.queue import ArqQueue
from jobs.sandbox import DockerSandbox


@dataclass
class Services:
    """Everything the API needs; passed explicitly, never global."""

    settings: Settings
    config: HandoffConfig
    engine: AsyncEngine
    sessions: Sessions
    queue: Queue
    sandbox: Sandbox
    tasks: TaskService
    journal: Journal
    integrations: list[Integration] = field(default_factory=list)
    # The one command registry: GitHub, Slack and the dashboard's help all render it.
    commands: Registry = field(default_factory=build_registry)

    async def close(self) -> None:
        """Release connections."""
        for integration in self.integrations:
            await integration.aclose()
        close = getattr(self.queue, "close", None)
        if close is not None:
            await close()
        sandbox_close = getattr(self.sandbox, "close", None)
        if sandbox_close is not None:
            sandbox_close()
        await self.engine.dispose()


def build_services(settings: Settings, reporters: Sequence[Reporter] = ()) -> Services:
    """Build the API's services from settings (connections open lazily)."""
    config = load_config(settings.handoff_config)
    journal = Journal(reporters)
    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    queue = ArqQueue(settings.redis_url, settings.handoff_queue_name)
    return Services(
        settings=settings,
        config=config,
        engine=engine,
        sessions=sessions,
        queue=queue,
        sandbox=DockerSandbox(base_url=settings.docker_host, instance=settings.instance_id),
        tasks=TaskService(sessions, queue, config, journal),
        journal=journal,
    )
