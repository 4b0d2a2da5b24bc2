"""GitHub as the code host of tasks requested elsewhere (a Slack request on ``acme/api``).

``owner/name`` is resolved to the App's installation on it (``GET /repos/{o}/{r}/installation``
with the App's JWT) and its default branch (``GET /repos/{o}/{r}`` with a token for that one
repository), cached: ten minutes for an installed repository, one minute for one that is not
(so installing the App is noticed quickly). The person's role comes from the collaborator
permission API, as for requests made on GitHub. The task then carries :class:`GitHubLinks`, so the
worker clones and pushes with a token minted for that repository and opens the pull request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from core.errors import HostUnavailable
from core.ports import HostedRepo
from github_app.automations.api import AutomationAPI
from github_app.errors import GitHubError, GitHubRejected, InstallationRevoked
from github_app.services import GitHubServices

FOUND_TTL_S = 600.0
MISSING_TTL_S = 60.0
MAX_CACHED = 10_000
# owner/name as GitHub allows them (an owner is 1-39 characters, no leading hyphen).
_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")


class GitHubRepositories:
    """:class:`core.ports.RepositoryHost` for GitHub."""

    def __init__(
        self, services: GitHubServices, api: AutomationAPI, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.svc = services
        self.api = api
        self._clock = clock
        self._cache: dict[str, tuple[float, HostedRepo | None]] = {}

    def hosts(self, repo: str) -> bool:
        """``owner/name`` (not a local path, a URL or ``.``/``..``)."""
        return bool(_REPO.match(repo)) and repo.split("/")[1] not in {".", ".."}

    async def find(self, repo: str) -> HostedRepo | None:
        """The repository and the App's installation on it (``None``: not installed, or no such repository)."""
        key = repo.lower()
        hit = self._cache.get(key)
        now = self._clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            installation = await self.api.installation(repo)
            found = None
            if installation is not None and not await self.svc.revoked(installation, repo):
                data = await self.api.repository(installation, repo)
                name = str(data.get("full_name") or repo)
                found = HostedRepo(
                    repo=name,
                    installation_id=installation,
                    default_branch=str(data.get("default_branch") or "main"),
                    clone_url=self.svc.clone_url(name),
                )
        except (GitHubRejected, InstallationRevoked) as exc:
            if isinstance(exc, GitHubRejected) and exc.status not in (403, 404):
                raise HostUnavailable(f"GitHub refused to look up {repo}: {exc}") from exc
            found = None  # the installation does not cover the repository
        except GitHubError as exc:
            raise HostUnavailable(f"GitHub did not answer about {repo}: {exc}") from exc
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now + (FOUND_TTL_S if found is not None else MISSING_TTL_S), found)
        return found

    async def role(self, hosted: HostedRepo, login: str) -> str:
        """``login``'s role on the repository (the permission API; ``none`` for strangers)."""
        try:
            return await self.svc.permissions.role(hosted.installation_id, hosted.repo, login)
        except GitHubError as exc:
            raise HostUnavailable(f"GitHub did not say what {login} may do on {hosted.repo}: {exc}") from exc

    def install_url(self, repo: str) -> str:
        """The App's installation page on GitHub."""
        slug = self.svc.settings.github_app_slug or "handoff"
        return f"{self.svc.settings.github_web_url.rstrip('/')}/apps/{slug}/installations/new"
