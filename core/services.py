"""The service container: everything a process builds once and passes on explicitly, never global.

The API process uses :class:`Services` as it is (built in ``create_app``, lives on
``app.state.services``); the worker extends it (:class:`jobs.services.WorkerServices`) with what
only runs need. Both are built by :mod:`jobs.services` (no I/O: connections open lazily), and the
integrations (GitHub, Slack, status webhooks) are built with the container as their host services,
then plugged in with :meth:`Services.plug`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from core.commands import Registry
from core.config import HandoffConfig
from core.db import Sessions
from core.handlers import build_registry
from core.journal import Journal
from core.ports import Integration, Queue, Sandbox
from core.settings import Settings
from core.tasks import TaskService


@dataclass
class Services:
    """What every Handoff process needs."""

    settings: Settings
    config: HandoffConfig
    engine: AsyncEngine
    sessions: Sessions
    queue: Queue
    sandbox: Sandbox
    tasks: TaskService
    journal: Journal
    # The one command registry: GitHub, Slack and the dashboard's help all render it, and
    # integrations add their own commands to it.
    commands: Registry = field(default_factory=build_registry)
    integrations: list[Integration] = field(default_factory=list)

    def plug(self, integrations: Sequence[Integration]) -> None:
        """Plug in integrations built with these services: their reporters join the journal."""
        self.integrations.extend(integrations)
        self.journal.reporters.extend(r for i in integrations for r in i.reporters)

    async def close(self) -> None:
        """Release connections (integrations first: they may still write)."""
        for integration in self.integrations:
            await integration.aclose()
        await self.queue.close()
        self.sandbox.close()
        await self.engine.dispose()
