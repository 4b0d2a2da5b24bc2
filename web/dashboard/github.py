"""GitHub sign-in (the OAuth web flow of the App) and who may read which repository.

A signed-in GitHub user sees a task only when ``GET /repos/{owner}/{name}`` answers 200 with their
own token: GitHub decides, so private repositories, org membership and App installation scope are
all respected without Handoff keeping its own copy of permissions. Answers are cached per user and
repository for a few minutes, so a page of fifty tasks costs no API call once warm.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

# ``owner/name`` as GitHub allows them; anything else (a path, a URL) is not a GitHub repository.
_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "handoff-dashboard",
}


def is_github_repo(repo: str) -> bool:
    """True for ``owner/name``; false for local paths and git URLs."""
    return bool(_REPO.match(repo)) and repo.split("/")[1] not in {".", ".."}


class SignInFailed(Exception):
    """The OAuth exchange or the ``/user`` call did not give us a user."""


class TokenRejected(Exception):
    """GitHub answered 401: the user's token expired or was revoked."""


@dataclass(frozen=True)
class GitHubUser:
    """The signed-in GitHub user."""

    login: str
    token: str


@dataclass(frozen=True)
class Access:
    """What a user may do on one repository."""

    read: bool
    write: bool = False


class GitHubOAuth:
    """The three calls of GitHub's OAuth web flow."""

    def __init__(self, client_id: str, client_secret: str, web_url: str, api_url: str) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self.web_url = web_url.rstrip("/")
        self.api_url = api_url.rstrip("/")

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """Where to send the browser to ask GitHub for a code."""
        query = urlencode({"client_id": self.client_id, "redirect_uri": redirect_uri, "state": state})
        return f"{self.web_url}/login/oauth/authorize?{query}"

    async def sign_in(self, code: str, redirect_uri: str) -> GitHubUser:
        """Exchange ``code`` for a user token, then ask who it belongs to."""
        async with httpx.AsyncClient(timeout=TIMEOUT, headers=HEADERS) as client:
            try:
                answer = await client.post(
                    f"{self.web_url}/login/oauth/access_token",
                    data={
                        "client_id": self.client_id,
                        "client_secret": self._client_secret,
                        "code": code,
                        "redirect_uri": redirect_uri,
                    },
                    headers={"Accept": "application/json"},
                )
                # GitHub reports a bad code with 200 and an "error" field.
                body: Any = answer.json() if answer.status_code == 200 else {}
                token = body.get("access_token") if isinstance(body, dict) else None
                if not isinstance(token, str) or not token:
                    error = body.get("error") if isinstance(body, dict) else None
                    raise SignInFailed(f"GitHub refused the sign-in code ({error or answer.status_code})")
                user = await client.get(f"{self.api_url}/user", headers={"Authorization": f"Bearer {token}"})
                who: Any = user.json() if user.status_code == 200 else {}
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInFailed(f"GitHub did not answer: {type(exc).__name__}") from exc
        login = who.get("login") if isinstance(who, dict) else None
        if not isinstance(login, str) or not login:
            raise SignInFailed(f"GitHub did not say who signed in ({user.status_code})")
        return GitHubUser(login=login, token=token)


class RepoAccess:
    """``can this user read owner/name?``, answered by GitHub and cached for ``ttl_s`` seconds."""

    def __init__(
        self,
        api_url: str,
        *,
        ttl_s: float = 300.0,
        concurrency: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.ttl_s = ttl_s
        self.concurrency = concurrency
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Access]] = {}

    async def check(self, login: str, token: str, repos: Iterable[str]) -> dict[str, Access]:
        """Access to each of ``repos`` (cached answers first, the rest asked concurrently)."""
        now = self._clock()
        if len(self._cache) > 10_000:  # keep memory bounded: forget what has expired anyway
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        result: dict[str, Access] = {}
        missing: list[str] = []
        for repo in dict.fromkeys(repos):
            if not is_github_repo(repo):
                result[repo] = Access(read=False)
                continue
            hit = self._cache.get((login, repo.lower()))
            if hit is not None and hit[0] > now:
                result[repo] = hit[1]
            else:
                missing.append(repo)
        if missing:
            gate = asyncio.Semaphore(self.concurrency)
            async with httpx.AsyncClient(timeout=TIMEOUT, headers=HEADERS) as client:

                async def ask(repo: str) -> None:
                    async with gate:
                        result[repo] = await self._ask(client, login, token, repo)

                await asyncio.gather(*(ask(repo) for repo in missing))
        return result

    async def _ask(self, client: httpx.AsyncClient, login: str, token: str, repo: str) -> Access:
        owner, name = repo.split("/", 1)
        url = f"{self.api_url}/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        try:
            answer = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            return Access(read=False)  # not cached: the next page asks again
        if answer.status_code == 401:
            raise TokenRejected("GitHub rejected the session's token")
        if answer.status_code not in (200, 404):
            return Access(read=False)  # a 5xx, a rate limit or SSO: deny now, ask again later
        access = Access(read=False)
        if answer.status_code == 200:
            permissions = _permissions(answer)
            access = Access(read=True, write=bool(permissions.get("push") or permissions.get("admin")))
        self._cache[(login, repo.lower())] = (self._clock() + self.ttl_s, access)
        return access

    def forget(self, login: str) -> None:
        """Drop a user's cached answers (on sign-out)."""
        for key in [k for k in self._cache if k[0] == login]:
            del self._cache[key]


def _permissions(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    permissions = body.get("permissions") if isinstance(body, dict) else None
    return permissions if isinstance(permissions, dict) else {}
