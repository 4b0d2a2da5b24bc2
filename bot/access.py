"""Who may start tasks from Slack, on which repositories, and which channel is bound to what.

The allow-list in ``handoff.yml`` (``slack.allow``) maps users, user groups and channels to
repository patterns; admins may do everything. Every decision carries its reason, which is both
what the person is told and what the audit log records. User-group membership is looked up
through ``usergroups.users.list`` and cached briefly; a failed lookup denies (fails closed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from bot.config import REPO_RE, SlackConfig
from bot.store import BINDING_PREFIX, Store

log = logging.getLogger(__name__)

GROUP_TTL_S = 300.0
GROUP_RETRY_S = 30.0
BINDINGS_TTL_S = 30.0

# Resolves a user group id to its member user ids (Slack's usergroups.users.list).
GroupLookup = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class Decision:
    """An allow-list answer and why."""

    allowed: bool
    reason: str


def repo_matches(pattern: str, repo: str) -> bool:
    """``acme/*`` matches ``acme/api``; names compare case-insensitively, as on GitHub."""
    return fnmatchcase(repo.lower(), pattern.lower())


def is_repo_name(text: str) -> bool:
    """True for ``owner/name``."""
    return bool(REPO_RE.match(text))


class Access:
    """Allow-list decisions, identities and channel bindings."""

    def __init__(self, config: SlackConfig, store: Store, groups: GroupLookup | None = None) -> None:
        self.config = config
        self.store = store
        self._groups = groups
        self._group_cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._bound: dict[str, str | None] = {}
        self._bound_at = float("-inf")

    # -- identities -----------------------------------------------------------------------------

    def is_admin(self, user: str) -> bool:
        """Admins are listed in ``slack.admins``."""
        return user in self.config.admins

    def identity(self, user: str) -> str:
        """The name tasks and audit entries carry: the linked GitHub login, else ``slack:<id>``."""
        return self.config.github_logins.get(user) or f"slack:{user}"

    # -- the allow-list -------------------------------------------------------------------------

    async def _in_group(self, user: str, group: str) -> bool:
        if self._groups is None:
            return False
        cached = self._group_cache.get(group)
        now = time.monotonic()
        if cached is None or now - cached[0] > GROUP_TTL_S:
            try:
                members = frozenset(await self._groups(group))
            except Exception as exc:  # Slack unreachable or scope missing: deny, say so in the log
                log.warning("could not list members of user group %s: %s", group, exc)
                # Remember the failure briefly so a burst of requests does not hammer the API.
                self._group_cache[group] = (now - GROUP_TTL_S + GROUP_RETRY_S, frozenset())
                return False
            self._group_cache[group] = (now, members)
            cached = self._group_cache[group]
        return user in cached[1]

    async def may_start(self, user: str, channel: str, repo: str) -> Decision:
        """Whether ``user``, writing in ``channel``, may start or steer tasks on ``repo``."""
        if self.is_admin(user):
            return Decision(True, "admin")
        for rule in self.config.allow:
            if not any(repo_matches(p, repo) for p in rule.repos):
                continue
            if user in rule.users:
                return Decision(True, f"user listed for {repo}")
            if channel in rule.channels:
                return Decision(True, f"channel listed for {repo}")
            for group in rule.usergroups:
                if await self._in_group(user, group):
                    return Decision(True, f"member of user group {group} listed for {repo}")
        return Decision(
            False,
            f"you are not on Handoff's Slack allow-list for `{repo}`; "
            "an admin can add you under `slack.allow` in handoff.yml",
        )

    def own_repos(self, user: str) -> list[str]:
        """The concrete (wildcard-free) repositories listed for ``user`` by id."""
        repos: list[str] = []
        for rule in self.config.allow:
            if user in rule.users:
                repos.extend(r for r in rule.repos if "*" not in r and r not in repos)
        return repos

    # -- channel bindings -----------------------------------------------------------------------

    async def bound_repo(self, channel: str) -> str | None:
        """The repository ``channel`` is bound to: a ``/handoff bind`` first, else config."""
        ref = await self.store.refs.recall(BINDING_PREFIX + channel)
        if ref is not None:  # bound or explicitly unbound in Slack: that overrides config
            repo = ref.get("repo")
            return str(repo) if repo else None
        return self.config.channels.get(channel)

    async def bind(self, channel: str, repo: str | None, actor: str) -> None:
        """Bind (or with ``None`` unbind) ``channel``; the announce index sees it at once here.

        ``actor`` is who did it, as tasks and the audit log name people (:meth:`identity`)."""
        await self.store.bind(channel, repo, actor)
        self._bound[channel] = repo

    async def refresh_bindings(self, force: bool = False) -> None:
        """Reload database bindings for :meth:`channel_for_repo` (at most every 30 s)."""
        now = time.monotonic()
        if not force and now - self._bound_at < BINDINGS_TTL_S:
            return
        self._bound = await self.store.bindings()
        self._bound_at = now

    def channel_for_repo(self, repo: str) -> str | None:
        """The channel bound to ``repo`` (for announcements); pure, from the last refresh."""
        merged: dict[str, str | None] = {**self.config.channels, **self._bound}
        for channel, bound in sorted(merged.items()):
            if bound is not None and bound.lower() == repo.lower():
                return channel
        return None
