"""Dashboard sessions: a signed cookie holding who is signed in and the session's CSRF token.

The cookie is signed (``itsdangerous``), not encrypted, so it holds nothing the browser's owner may
not see: their own identity, their own GitHub user token and a random CSRF token. It is
``HttpOnly`` (no script reads it), ``SameSite=Lax`` (no cross-site POST carries it) and ``Secure``
when the public URL is https. Every POST must also echo the CSRF token, as a form field or the
``X-CSRF-Token`` header; :func:`check_csrf` rejects it with 403 otherwise.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "handoff_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# GitHub App user tokens live 8 hours; a session never outlives the token it carries by much.
MAX_AGE_S = 12 * 3600


class PageError(Exception):
    """Ends a dashboard request with an HTML error page (or a redirect when ``location`` is set)."""

    def __init__(self, status: int, message: str = "", location: str | None = None) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message
        self.location = location


@dataclass
class Session:
    """What the cookie carries; ``user`` is ``None`` until someone signs in."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    user: str | None = None
    kind: str | None = None  # "local" or "github"
    token: str | None = None  # the GitHub user token: used for API calls, never rendered
    oauth_state: str | None = None
    next: str | None = None
    # Not stored: whether the cookie must be (re)written with this response, and whether the
    # request brought no valid cookie at all (then no CSRF token can match).
    changed: bool = field(default=False, compare=False)
    fresh: bool = field(default=False, compare=False)

    def signed_in(self, user: str, kind: str, token: str | None = None) -> Session:
        """A fresh session for ``user``: a new CSRF token, so one known before sign-in is useless."""
        return Session(user=user, kind=kind, token=token, changed=True)


class SessionCodec:
    """Reads and writes the session cookie."""

    def __init__(self, secret: str, *, secure: bool) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="handoff.dashboard.session")
        self.secure = secure

    def load(self, request: Request) -> Session:
        """The request's session, or a new anonymous one (marked ``changed``) when absent or invalid."""
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data: Any = self._signer.loads(raw, max_age=MAX_AGE_S)
            except BadSignature:  # also covers an expired signature
                data = None
            if isinstance(data, dict) and isinstance(data.get("csrf"), str):
                return Session(
                    csrf=data["csrf"],
                    user=_text(data, "user"),
                    kind=_text(data, "kind"),
                    token=_text(data, "token"),
                    oauth_state=_text(data, "oauth_state"),
                    next=_text(data, "next"),
                )
        return Session(changed=True, fresh=True)

    def save(self, response: Response, session: Session) -> None:
        """Write the cookie if the session changed."""
        if not session.changed:
            return
        data = {k: v for k, v in asdict(session).items() if k in _FIELDS and v is not None}
        response.set_cookie(
            COOKIE,
            self._signer.dumps(data),
            max_age=MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure,
        )

    def clear(self, response: Response) -> None:
        """Remove the cookie (sign out)."""
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=self.secure)


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


_FIELDS = frozenset({"csrf", "user", "kind", "token", "oauth_state", "next"})


async def check_csrf(request: Request, session: Session) -> None:
    """Raise a 403 :class:`PageError` unless the request echoes the session's CSRF token."""
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if session.fresh or not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise PageError(
            403, "The form expired or did not come from this site. Reload the page and try again."
        )


def safe_next(value: str | None, default: str = "/tasks") -> str:
    """A local path to go back to after sign-in; anything else (``//evil``, ``https://``) is ignored."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value
