"""The GitHub REST client: githubkit pointed at ``GITHUB_API_URL``, with Handoff's own policies.

* **Auth** — App JWT for ``/app`` endpoints; for everything else an installation token minted for
  one repository and the permissions the caller names (:mod:`github_app.auth`). A 401 drops the token
  and retries once with a freshly minted one (a token can die before its ``expires_at``).
* **No blind retries** — githubkit's ``auto_retry`` is off: it retries POSTs on 5xx, which duplicates
  comments. Failures become :mod:`github_app.errors` and the caller decides (the outbox retries
  later, a create that may have landed is looked up by its marker first).
* **Rate limits** — ``Retry-After`` / ``x-ratelimit-reset`` pause the whole installation in this
  process: calls during the pause fail fast instead of spending the budget again.
* **Serialised writes** — mutating requests of one installation go one at a time, at least
  ``write_interval_s`` apart (GitHub's secondary-limit guidance). A write made in the
  acknowledgement lane (:func:`ack_lane`: a 👀, the queued check run, paced by the outbox on its
  own budget) still waits for the write in flight but not for that gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, TypeVar, cast

import httpx
from githubkit import GitHub
from githubkit.auth.base import BaseAuthStrategy
from githubkit.exception import GitHubException, RateLimitExceeded, RequestFailed, RequestTimeout

from github_app.auth import AppJWT, RevokedCheck, Token, TokenCache, parse_token
from github_app.errors import GitHubRateLimited, GitHubRejected, GitHubUnavailable

R = TypeVar("R")
Call = Callable[[GitHub[Any]], Awaitable[R]]
# Secondary limits without a hint: wait at least a minute (GitHub's guidance).
DEFAULT_BACKOFF_S = 60.0


class _Header(httpx.Auth):
    def __init__(self, value: str) -> None:
        self.value = value

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = self.value
        yield request


class HeaderAuth(BaseAuthStrategy):
    """githubkit auth strategy sending a fixed ``Authorization`` value (``Bearer <jwt>``, ``token <t>``)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def get_auth_flow(self, github: Any) -> httpx.Auth:
        return _Header(self.value)


class _Gate:
    """One installation's write slot: one mutating request at a time, ``interval`` apart."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()  # held by the write in flight
        self.last = float("-inf")  # when the last write ended
        self.acks_waiting = 0


_ACK_LANE: ContextVar[bool] = ContextVar("handoff_github_ack_lane", default=False)


@contextlib.contextmanager
def ack_lane(on: bool = True) -> Iterator[None]:
    """Writes made inside go in the acknowledgement lane (see the module docstring)."""
    token = _ACK_LANE.set(on)
    try:
        yield
    finally:
        _ACK_LANE.reset(token)


class GitHubClient:
    """Calls GitHub as the App or as one of its installations."""

    def __init__(
        self,
        *,
        app_id: str,
        private_key: str,
        api_url: str,
        write_interval_s: float = 1.0,
        timeout_s: float = 10.0,
        revoked: RevokedCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_url = api_url
        self.write_interval_s = write_interval_s
        self.timeout_s = timeout_s
        self.jwt = AppJWT(app_id, private_key, clock)
        self.tokens = TokenCache(self._mint, revoked, clock)
        self._paused: dict[int | None, float] = {}
        self._gates: dict[int | None, _Gate] = {}

    def github(self, authorization: str | None, *, follow_redirects: bool = True) -> GitHub[Any]:
        """A githubkit client for ``authorization`` (``None``: unauthenticated)."""
        auth: Any = HeaderAuth(authorization) if authorization else None
        return GitHub(
            auth,
            base_url=self.api_url,
            auto_retry=False,
            http_cache=False,
            timeout=self.timeout_s,
            user_agent="handoff-github-app",
            follow_redirects=follow_redirects,
        )

    async def as_app(self, fn: Call[R], *, write: bool = False) -> R:
        """Run ``fn`` authenticated as the App itself (JWT): ``/app/...`` endpoints."""
        self._check_paused(None)
        async with self._slot(None, write):
            try:
                return await fn(self.github(f"Bearer {self.jwt.get()}"))
            except GitHubException as exc:
                raise self._map(exc, None, write) from exc

    async def token(self, installation_id: int, repo: str | None, permissions: Mapping[str, str]) -> Token:
        """An installation token for ``repo`` with ``permissions`` (cached, minted when needed)."""
        return await self.tokens.get(self.jwt.get(), installation_id, repo, permissions)

    async def call(
        self,
        installation_id: int,
        repo: str | None,
        fn: Call[R],
        *,
        permissions: Mapping[str, str],
        write: bool = False,
        follow_redirects: bool = True,
    ) -> R:
        """Run ``fn`` as the installation, scoped to ``repo``; one re-mint and retry after a 401.

        ``follow_redirects=False``: a redirect (e.g. to a log download) comes back as the answer."""
        self._check_paused(installation_id)
        for attempt in (1, 2):
            token = await self.token(installation_id, repo, permissions)
            try:
                async with self._slot(installation_id, write):
                    return await fn(self.github(f"token {token.value}", follow_redirects=follow_redirects))
            except RequestFailed as exc:
                if exc.response.status_code == 401 and attempt == 1:
                    self.tokens.forget_token(token.value)
                    continue
                raise self._map(exc, installation_id, write) from exc
            except GitHubException as exc:
                raise self._map(exc, installation_id, write) from exc
        raise AssertionError("unreachable")

    async def _mint(
        self, jwt_token: str, installation_id: int, repo: str | None, permissions: Mapping[str, str]
    ) -> Token:
        body: dict[str, Any] = {"permissions": dict(permissions)}
        if repo is not None:
            body["repositories"] = [repo.partition("/")[2]]
        self._check_paused(None)
        # Keep the client referenced: githubkit's namespaces hold it weakly.
        gh = self.github(f"Bearer {jwt_token}")
        try:
            response = await gh.rest.apps.async_create_installation_access_token(
                installation_id, data=cast(Any, body)
            )
        except GitHubException as exc:
            raise self._map(exc, None, False) from exc
        return parse_token(response.json())

    # -- policies ----------------------------------------------------------------------------

    def _check_paused(self, installation_id: int | None) -> None:
        until = self._paused.get(installation_id, 0.0)
        left = until - time.monotonic()
        if left > 0:
            raise GitHubRateLimited(f"rate limited; paused for another {left:.0f} s", left)

    @contextlib.asynccontextmanager
    async def _slot(self, installation_id: int | None, write: bool) -> AsyncIterator[None]:
        """One write of the installation at a time; ``write_interval_s`` between writes, except
        that an acknowledgement only waits for the write in flight (and goes before other waiters)."""
        if not write:
            yield
            return
        gate = self._gates.setdefault(installation_id, _Gate())
        if _ACK_LANE.get():
            gate.acks_waiting += 1
            try:
                await gate.lock.acquire()
            finally:
                gate.acks_waiting -= 1
        else:
            while True:
                # Wait out the gap without holding the lock: an acknowledgement may go meanwhile.
                wait = gate.last + self.write_interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                await gate.lock.acquire()
                if not gate.acks_waiting and gate.last + self.write_interval_s <= time.monotonic():
                    break
                gate.lock.release()
                await asyncio.sleep(0)  # let the acknowledgement (or a write that went first) have it
        try:
            yield
        finally:
            gate.last = time.monotonic()
            gate.lock.release()

    def _map(self, exc: GitHubException, installation_id: int | None, write: bool) -> Exception:
        """Turn a githubkit exception into a :mod:`github_app.errors` one (and note pauses)."""
        if isinstance(exc, RateLimitExceeded):
            return self._pause(installation_id, exc.retry_after, exc.response.status_code)
        if isinstance(exc, RequestFailed):
            status = exc.response.status_code
            message = _message(exc.response.raw_response)
            if status == 429 or (status == 403 and "rate limit" in message.lower()):
                return self._pause(installation_id, timedelta(seconds=DEFAULT_BACKOFF_S), status)
            if status >= 500:
                return GitHubUnavailable(
                    f"GitHub answered {status}: {message}", uncertain=write, status=status
                )
            return GitHubRejected(f"GitHub answered {status}: {message}", status)
        if isinstance(exc, RequestTimeout):
            return GitHubUnavailable("GitHub did not answer in time", uncertain=write)
        # RequestError: connection refused/reset, TLS... A write may have been sent before the reset.
        return GitHubUnavailable(f"cannot reach GitHub: {exc!r}", uncertain=write)

    def _pause(self, installation_id: int | None, after: timedelta, status: int) -> GitHubRateLimited:
        seconds = max(after.total_seconds(), 1.0)
        self._paused[installation_id] = max(
            self._paused.get(installation_id, 0.0), time.monotonic() + seconds
        )
        return GitHubRateLimited(f"GitHub rate limit ({status}); retry in {seconds:.0f} s", seconds, status)


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    return str(data.get("message", ""))[:300] if isinstance(data, dict) else ""
