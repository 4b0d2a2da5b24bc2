"""App authentication: the RS256 App JWT and installation tokens scoped to one repository.

The JWT (``iat`` 60 s in the past for clock drift, ``exp`` 9 minutes on, ``iss`` the App id) is
cached for 8 minutes. Installation tokens are minted for exactly one repository and the named
permissions, cached per (installation, repository, permissions) until ``expires_at`` minus a margin
large enough for a clone or push to finish with it, and minted again on demand (a 401 elsewhere
calls :meth:`TokenCache.forget`). A revoked installation or repository gets no new token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from core.errors import ConfigError
from github_app.errors import InstallationRevoked

# Only these permission sets are ever requested (least privilege per use).
READ = {"metadata": "read", "contents": "read", "issues": "read", "pull_requests": "read"}
REPORT = {"metadata": "read", "checks": "write", "issues": "write", "pull_requests": "write"}
GIT = {"metadata": "read", "contents": "write"}
GIT_READ = {"metadata": "read", "contents": "read"}
PULLS = {"metadata": "read", "contents": "read", "pull_requests": "write"}

JWT_TTL_S = 8 * 60
# Mint again this long before expiry: a clone or push that starts with the token must finish with it.
TOKEN_MARGIN_S = 10 * 60


@dataclass(frozen=True)
class Token:
    """An installation access token and when it stops working (epoch seconds)."""

    value: str
    expires_at: float


Mint = Callable[[str, int, str | None, Mapping[str, str]], Awaitable[Token]]
RevokedCheck = Callable[[int, str | None], Awaitable[bool]]


class AppJWT:
    """Signs the App's JWT (RS256) and caches it."""

    def __init__(self, app_id: str, private_key: str, clock: Callable[[], float] = time.time) -> None:
        if not app_id or "PRIVATE KEY" not in private_key:
            raise ConfigError("GITHUB_APP_ID and a PEM GITHUB_PRIVATE_KEY(_PATH) are needed")
        self.app_id = app_id
        self._key = private_key
        self._clock = clock
        self._cached: tuple[str, float] | None = None

    def get(self) -> str:
        """A JWT valid for at least another minute."""
        now = self._clock()
        if self._cached is not None and self._cached[1] > now:
            return self._cached[0]
        iat = int(now) - 60
        try:
            token = jwt.encode({"iat": iat, "exp": iat + 60 + 9 * 60, "iss": self.app_id}, self._key, "RS256")
        except NotImplementedError as exc:  # PyJWT without the cryptography package
            raise ConfigError(
                "signing the GitHub App JWT needs `cryptography` (githubkit[auth-app])"
            ) from exc
        self._cached = (token, now + JWT_TTL_S)
        return token


class TokenCache:
    """Installation tokens by (installation, repository, permissions), minted at most once at a time."""

    def __init__(
        self, mint: Mint, revoked: RevokedCheck | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._mint = mint
        self.revoked = revoked
        self._clock = clock
        self._tokens: dict[tuple[int, str | None, str], Token] = {}
        self._locks: dict[tuple[int, str | None, str], asyncio.Lock] = {}

    @staticmethod
    def _key(
        installation_id: int, repo: str | None, permissions: Mapping[str, str]
    ) -> tuple[int, str | None, str]:
        return installation_id, repo, ",".join(f"{k}:{v}" for k, v in sorted(permissions.items()))

    async def get(
        self, jwt_token: str, installation_id: int, repo: str | None, permissions: Mapping[str, str]
    ) -> Token:
        """A token for ``repo`` (``owner/name``; ``None`` = the whole installation) with ``permissions``."""
        key = self._key(installation_id, repo, permissions)
        token = self._tokens.get(key)
        if token is not None and token.expires_at - TOKEN_MARGIN_S > self._clock():
            return token
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self._tokens.get(key)
            if token is not None and token.expires_at - TOKEN_MARGIN_S > self._clock():
                return token
            if self.revoked is not None and await self.revoked(installation_id, repo):
                raise InstallationRevoked(f"installation {installation_id} no longer covers {repo or 'this'}")
            token = await self._mint(jwt_token, installation_id, repo, permissions)
            self._tokens[key] = token
            return token

    def forget(self, installation_id: int, repo: str | None = None) -> None:
        """Drop cached tokens of an installation (of one repository when ``repo`` is given)."""
        for key in [k for k in self._tokens if k[0] == installation_id and (repo is None or k[1] == repo)]:
            del self._tokens[key]

    def forget_token(self, value: str) -> None:
        """Drop one token GitHub refused (401), so the next call mints a fresh one."""
        for key in [k for k, t in self._tokens.items() if t.value == value]:
            del self._tokens[key]


def parse_token(data: Mapping[str, Any]) -> Token:
    """A :class:`Token` from the ``POST /app/installations/{id}/access_tokens`` response."""
    expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
    return Token(value=str(data["token"]), expires_at=expires.timestamp())


def basic_auth_header(token: str) -> str:
    """The ``http.extraheader`` git sends: ``AUTHORIZATION: basic base64(x-access-token:TOKEN)``."""
    import base64

    encoded = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return f"AUTHORIZATION: basic {encoded}"
