"""The Slack workspaces Handoff is installed in: a Web API client for each, and who the bot is there.

Single-workspace mode (``SLACK_BOT_TOKEN``): one client for every request. With the OAuth install
flow (:mod:`bot.installs`), each workspace has its own bot token, kept encrypted in the database;
:meth:`Workspaces.client` picks the one of a request's ``team_id``. ``auth.test`` says who the bot
is in a workspace (its user id, which mentions of it carry) and the workspace's address (links to
threads), asked once per workspace and kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

RETRY_S = 30.0


@dataclass(frozen=True)
class BotIdentity:
    """The bot in one workspace: its user id and the workspace's web address."""

    user_id: str | None
    url: str | None

    def thread_url(self, channel: str, ts: str) -> str | None:
        """The web address of the message (thread) ``ts`` in ``channel``."""
        if not self.url or not channel or not ts:
            return None
        return f"{self.url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"


# team id (or None: the only workspace) -> its client, or None when Handoff is not installed there.
ClientFor = Callable[[str | None], Awaitable[AsyncWebClient | None]]


class Workspaces:
    """Clients and bot identities by workspace."""

    def __init__(self, client_for: ClientFor, clock: Callable[[], float] = time.monotonic) -> None:
        self._client_for = client_for
        self._clock = clock
        self._identities: dict[str | None, BotIdentity] = {}
        self._failed: dict[str | None, float] = {}

    @classmethod
    def single(cls, client: AsyncWebClient) -> Workspaces:
        """One workspace, one token (``SLACK_BOT_TOKEN``)."""

        async def the_one(team: str | None) -> AsyncWebClient:
            return client

        return cls(the_one)

    async def client(self, team: str | None) -> AsyncWebClient | None:
        """The Web API client for ``team`` (``None``: Handoff is not installed there)."""
        return await self._client_for(team)

    async def identity(self, team: str | None) -> BotIdentity:
        """Who the bot is in ``team`` (``auth.test``, asked once; unknown fields on failure)."""
        known = self._identities.get(team)
        if known is not None:
            return known
        if self._clock() - self._failed.get(team, float("-inf")) < RETRY_S:
            return BotIdentity(None, None)
        client = await self.client(team)
        try:
            answer = await client.auth_test() if client is not None else None
        except Exception as exc:  # mentions stay in the text and links are left out; nothing fails
            log.info("auth.test for workspace %s failed: %s", team, exc)
            answer = None
        if answer is None:
            self._failed[team] = self._clock()
            return BotIdentity(None, None)
        identity = BotIdentity(str(answer.get("user_id") or "") or None, str(answer.get("url") or "") or None)
        self._identities[team] = identity
        return identity

    def forget(self, team: str | None) -> None:
        """Drop what is known about ``team`` (reinstalled, or uninstalled)."""
        self._identities.pop(team, None)
        self._failed.pop(team, None)
