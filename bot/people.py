"""Display names of Slack users (``users.info``), cached: ``<@U123>`` in a request becomes ``@name``.

A lookup that fails (Slack unreachable, the ``users:read`` scope missing) leaves the id as it is:
the request still goes through, with ``@U123`` in its text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

NAME_TTL_S = 3600.0
MAX_CACHED = 10_000

# users.info for one user id -> the API's answer (a mapping with "user").
UserInfo = Callable[[str], Awaitable[Any]]


def display_name(user: Any) -> str | None:
    """The name Slack shows for a ``users.info`` user: display name, else real name, else handle."""
    if not isinstance(user, dict):
        return None
    raw = user.get("profile")
    profile: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for value in (profile.get("display_name"), profile.get("real_name"), user.get("name")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class Names:
    """``user id -> display name`` through ``users.info``, cached for an hour."""

    def __init__(self, info: UserInfo, clock: Callable[[], float] = time.monotonic) -> None:
        self._info = info
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}

    async def __call__(self, users: set[str]) -> dict[str, str]:
        """Names of ``users`` that could be found (the others are left out)."""
        now = self._clock()
        found: dict[str, str] = {}
        for user in sorted(users):
            hit = self._cache.get(user)
            if hit is not None and hit[0] > now:
                found[user] = hit[1]
                continue
            try:
                answer = await self._info(user)
            except Exception as exc:  # the name is a nicety: never fail the request for it
                log.info("users.info %s failed: %s", user, exc)
                continue
            name = display_name(answer.get("user") if hasattr(answer, "get") else None)
            if name is None:
                continue
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[user] = (now + NAME_TTL_S, name)
            found[user] = name
        return found
