"""The dashboard's state, built once in ``create_app``: templates, sessions, sign-in and access.

:class:`Dashboard` lives on ``app.state.dashboard``. It decides who is asking (:meth:`viewer`),
what they may see (:meth:`scope`, :meth:`visible_task`) and renders pages with the headers every
page gets (no caching of private pages, no framing, a strict content security policy).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from core.errors import NotFound
from core.models import Task
from core.services import Services
from core.settings import Settings
from web.dashboard import filters
from web.dashboard.github import Access, GitHubOAuth, RepoAccess, TokenRejected
from web.dashboard.queries import known_repos
from web.dashboard.session import PageError, Session, SessionCodec

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_PREFIX = "/static/dashboard"
# How many of the most recently used repositories a GitHub user's visibility is computed over.
MAX_REPOS = 300

_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show private task data: never keep them in a shared cache.
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the local admin (sees everything) or a GitHub user."""

    login: str
    kind: str
    token: str | None = None

    @property
    def admin(self) -> bool:
        """The local admin signed in with the local token."""
        return self.kind == "local"

    @property
    def actor(self) -> str:
        """How the audit log names this person."""
        return f"dashboard:{self.login}"


class Dashboard:
    """Templates, session codec, local token, GitHub sign-in and the access cache."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.public_url = settings.handoff_public_url.rstrip("/")
        secret = settings.handoff_session_secret
        # Without a configured secret, sessions last as long as this process (and this replica).
        self.codec = SessionCodec(
            secret.get_secret_value() if secret else secrets.token_urlsafe(32),
            secure=self.public_url.startswith("https://"),
        )
        token = settings.handoff_api_token
        self.local_token = token.get_secret_value() if token else secrets.token_urlsafe(24)
        if token is None:
            # The single-user sign-in: shown once, here, like a notebook server's token.
            log.warning("dashboard sign-in: open %s/login?token=%s", self.public_url, self.local_token)
        self.oauth: GitHubOAuth | None = None
        if settings.github_client_id and settings.github_client_secret:
            self.oauth = GitHubOAuth(
                settings.github_client_id,
                settings.github_client_secret.get_secret_value(),
                settings.github_web_url,
                settings.github_api_url,
            )
        self.access = RepoAccess(settings.github_api_url)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(filters.FILTERS)
        self.templates.globals["asset"] = self._asset_urls()

    @property
    def callback_url(self) -> str:
        """The OAuth redirect URI registered with the GitHub App."""
        return f"{self.public_url}/login/github/callback"

    def _asset_urls(self) -> dict[str, str]:
        # A content hash in the URL lets browsers cache assets yet never run a stale script.
        urls = {}
        for path in sorted((HERE / "static").iterdir()):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
            urls[path.name] = f"{STATIC_PREFIX}/{path.name}?v={digest}"
        return urls

    # ------------------------------------------------------------------ rendering

    def render_text(self, name: str, **context: Any) -> str:
        """Render a template (or fragment) to a string."""
        return self.templates.get_template(name).render(**context)

    def page(
        self,
        request: Request,
        session: Session,
        name: str,
        *,
        viewer: Viewer | None = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """A full page (or fragment) with the session cookie and security headers."""
        html = self.render_text(
            name,
            request_path=request.url.path,
            csrf=session.csrf,
            viewer=viewer,
            github_sign_in=self.oauth is not None,
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
        self.codec.save(response, session)
        return response

    # ------------------------------------------------------------------ who sees what

    def viewer(self, session: Session) -> Viewer | None:
        """The signed-in person, if any."""
        if session.user is None or session.kind not in ("local", "github"):
            return None
        if session.kind == "github" and not session.token:
            return None
        return Viewer(login=session.user, kind=session.kind, token=session.token)

    def require(self, request: Request, session: Session) -> Viewer:
        """The signed-in person, or a redirect to the sign-in page."""
        viewer = self.viewer(session)
        if viewer is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise PageError(303, "sign in first", location=f"/login?{_next_query(target)}")
        return viewer

    async def scope(self, services: Services, viewer: Viewer) -> frozenset[str] | None:
        """The repositories ``viewer`` may see; ``None`` means every one (the local admin)."""
        if viewer.admin:
            return None
        repos = await known_repos(services.sessions, limit=MAX_REPOS)
        access = await self._access(viewer, repos)
        return frozenset(repo for repo, a in access.items() if a.read)

    async def visible_task(self, services: Services, viewer: Viewer, task_id: str) -> Task:
        """The task, or 404 — also when it exists but ``viewer`` may not read its repository."""
        try:
            task = await services.tasks.get(task_id)
        except NotFound:
            raise PageError(404, "No such task.") from None
        if not viewer.admin and not (await self._access(viewer, [task.repo]))[task.repo].read:
            # Same answer as a missing task: a page must not confirm that a private task exists.
            raise PageError(404, "No such task.")
        return task

    async def can_act(self, viewer: Viewer, task: Task) -> bool:
        """Whether ``viewer`` may cancel or retry ``task``: the admin, writers, or its requester."""
        if viewer.admin:
            return True
        if task.requester and task.requester == viewer.login:
            return True
        return (await self._access(viewer, [task.repo]))[task.repo].write

    async def _access(self, viewer: Viewer, repos: list[str]) -> dict[str, Access]:
        try:
            return await self.access.check(viewer.login, viewer.token or "", repos)
        except TokenRejected:
            raise PageError(303, "sign in again", location="/login?expired=1") from None


def _next_query(target: str) -> str:
    return urlencode({"next": target})
