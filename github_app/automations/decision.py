"""What a decision about one event is made with, shared by the engine, firing and CI repair.

:class:`EventContext` holds what matching and firing learn about the event (asked of GitHub at most
once each), :class:`Decision` is a rule about to fire, and :class:`Engine` is what firing and CI
repair use of the engine (:class:`github_app.automations.engine.Automations`), so neither imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from core.automations.facts import EventFacts
from core.automations.ledger import Firing, Ledger, Pause
from core.automations.rules import Rule
from core.outbox import OutboxMessage
from github_app.automations.api import AutomationAPI
from github_app.automations.diff import changed_paths
from github_app.services import GitHubServices


@dataclass
class EventContext:
    """What matching and firing learn about one event, asked of GitHub at most once each."""

    facts: EventFacts
    svc: GitHubServices
    api: AutomationAPI
    # Skips decided while handling the event, recorded together once it is handled.
    pending: list[Firing] = field(default_factory=list)
    _roles: dict[str, str] = field(default_factory=dict)
    _files: list[dict[str, Any]] | None = None
    _pause: tuple[Pause | None] | None = None

    async def paused(self, ledger: Ledger) -> Pause | None:
        """The pause on the event's repository, if any (asked once per event)."""
        if self._pause is None:
            self._pause = (await ledger.paused(self.facts.repo),)
        return self._pause[0]

    async def role(self, login: str) -> str | None:
        """``login`` 's role on the repository (the collaborator permission API, cached)."""
        if login not in self._roles:
            self._roles[login] = await self.svc.permissions.role(
                self.facts.installation_id, self.facts.repo, login
            )
        return self._roles[login]

    async def files(self) -> list[dict[str, Any]]:
        """The pull request's files with their patches."""
        if self._files is None:
            number = self.facts.number
            self._files = (
                await self.api.pull_files(self.facts.installation_id, self.facts.repo, number)
                if number is not None and self.facts.is_pr
                else []
            )
        return self._files

    async def changed_paths(self) -> list[str] | None:
        """The paths the pull request changes."""
        return changed_paths(await self.files())


@dataclass(frozen=True)
class Decision:
    """A rule about to fire: its dedupe key and what it is about."""

    rule: Rule
    source: str
    key: str


class Engine(Protocol):
    """What firing a decision needs of the engine that made it."""

    svc: GitHubServices
    api: AutomationAPI
    ledger: Ledger

    def firing(
        self,
        rule: Rule,
        source: str,
        facts: EventFacts,
        decision: str = ...,
        reason: str | None = None,
        key: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Firing:
        """The ledger row of a decision about ``rule`` on ``facts``."""
        ...

    async def skip(
        self,
        rule: Rule,
        source: str,
        facts: EventFacts,
        reason: str,
        *,
        ctx: EventContext | None = None,
        **data: Any,
    ) -> None:
        """Record a skip with its reason."""
        ...

    async def send(self, messages: list[OutboxMessage], task_id: str | None = None) -> None:
        """Write outbox rows."""
        ...
