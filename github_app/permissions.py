"""Who may start runs: the collaborator permission API, cached briefly.

``author_association`` is not used: it reads ``NONE`` for private members of an organisation. The
role comes from ``GET /repos/{o}/{r}/collaborators/{u}/permission`` (``role_name`` when present —
it tells ``maintain`` from ``write`` — else ``permission``), cached for ``ttl_s`` so a burst of
commands costs one call, yet a revoked collaborator loses access within a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from github_app.api import GitHubAPI

WRITE_ROLES = frozenset({"admin", "maintain", "write"})


def can_write(role: str) -> bool:
    """True for the roles that may start runs (write, maintain, admin)."""
    return role in WRITE_ROLES


class Permissions:
    """Roles by (installation, repository, user), cached for ``ttl_s`` seconds."""

    def __init__(
        self, api: GitHubAPI, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.api = api
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[tuple[int, str, str], tuple[str, float]] = {}

    async def role(self, installation_id: int, repo: str, user: str) -> str:
        """The user's role on ``repo`` (``none`` for strangers)."""
        key = (installation_id, repo.lower(), user.lower())
        hit = self._cache.get(key)
        now = self._clock()
        if hit is not None and hit[1] > now:
            return hit[0]
        role = await self.api.permission(installation_id, repo, user)
        if len(self._cache) > 10_000:  # bounded: drop everything rather than grow forever
            self._cache.clear()
        self._cache[key] = (role, now + self.ttl_s)
        return role
