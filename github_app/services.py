"""Everything the GitHub integration uses, built once per process by :func:`github_app.integration.build_integration`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from core.commands import Registry
from core.db import Sessions
from core.models import ExternalRef
from core.refs import put_ref
from core.settings import Settings
from core.tasks import TaskService
from github_app.api import GitHubAPI
from github_app.client import GitHubClient
from github_app.permissions import Permissions
from github_app.repo_config import GitHubServerConfig, RepoConfigLoader
from github_app.routing import EventRegistry, Screening

REVOKED_INSTALLATION = "github:revoked:installation:{id}"
REVOKED_REPO = "github:revoked:repo:{id}:{repo}"
PR_REF = "github:pr:{repo}#{number}"


@dataclass
class GitHubServices:
    """The GitHub client, caches and core services shared by the route, the job and the notifier."""

    settings: Settings
    server: GitHubServerConfig
    client: GitHubClient
    api: GitHubAPI
    permissions: Permissions
    repo_configs: RepoConfigLoader
    sessions: Sessions
    tasks: TaskService
    registry: Registry
    events: EventRegistry
    screening: Screening
    app_id: int
    # (delivery id, "event.action", slim payload, attempt, defer seconds) -> job queued.
    enqueue: Any = None
    # The automation engine (github_app.automations.install sets it).
    automations: Any = None

    @property
    def bot_login(self) -> str:
        """The login the App comments as (``<slug>[bot]``)."""
        return self.screening.bot_login

    def clone_url(self, repo: str) -> str:
        """Host-side clone and push URL of ``owner/name``."""
        return f"{self.settings.github_git_url.rstrip('/')}/{repo}.git"

    def task_url(self, task_id: str) -> str:
        """The task's page on the dashboard."""
        return f"{self.settings.handoff_public_url.rstrip('/')}/tasks/{task_id}"

    async def revoked(self, installation_id: int, repo: str | None) -> bool:
        """True when tokens may no longer be minted for this installation (or repository)."""
        keys = [REVOKED_INSTALLATION.format(id=installation_id)]
        if repo is not None:
            keys.append(REVOKED_REPO.format(id=installation_id, repo=repo.lower()))
        async with self.sessions() as session:
            rows = await session.execute(select(ExternalRef).where(col(ExternalRef.key).in_(keys)))
            return any(r.ref.get("revoked") for r in rows.scalars())

    async def set_revoked(
        self, installation_id: int, repos: list[str] | None, revoked: bool, why: str
    ) -> None:
        """Record (or lift) a revocation, and drop cached tokens at once."""
        keys = (
            [REVOKED_REPO.format(id=installation_id, repo=r.lower()) for r in repos]
            if repos is not None
            else [REVOKED_INSTALLATION.format(id=installation_id)]
        )
        async with self.sessions.begin() as session:
            for key in keys:
                await put_ref(session, key, {"revoked": revoked, "why": why})
        if revoked:
            targets: list[str | None] = list(repos) if repos is not None else [None]
            for repo in targets:
                self.client.tokens.forget(installation_id, repo)
