"""Sign-in and sign-out: GitHub's OAuth web flow, or the local token of a single-user install."""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from web.dashboard.github import SignInFailed
from web.dashboard.session import PageError, Session, check_csrf, safe_next
from web.dashboard.state import SECURITY_HEADERS, Dashboard

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


def dashboard(request: Request) -> Dashboard:
    """The dashboard state built in ``create_app``."""
    dash: Dashboard = request.app.state.dashboard
    return dash


def redirect(dash: Dashboard, location: str, session: Session | None = None) -> RedirectResponse:
    """A 303 to ``location`` that writes the session cookie when it changed."""
    response = RedirectResponse(location, status_code=303, headers=SECURITY_HEADERS)
    if session is not None:
        dash.codec.save(response, session)
    return response


def _token_ok(dash: Dashboard, given: str) -> bool:
    return hmac.compare_digest(given.encode(), dash.local_token.encode())


@router.get("/login", response_model=None)
async def login_page(
    request: Request,
    next: Annotated[str | None, Query(max_length=2000)] = None,
    token: Annotated[str | None, Query(max_length=500)] = None,
    expired: bool = False,
) -> Response:
    """The sign-in page; ``?token=`` signs the local admin in directly (the link printed at start)."""
    dash = dashboard(request)
    session = dash.codec.load(request)
    if expired:
        # GitHub rejected the stored token: forget it, keep nothing but a fresh CSRF token.
        session = Session(changed=True)
    target = safe_next(next)
    if token is not None:
        if _token_ok(dash, token):
            # Redirect at once so the token leaves the address bar and the browser history.
            return redirect(dash, target, session.signed_in("local", "local"))
        return _login_form(request, dash, session, target, "That token is not valid.", 401)
    if dash.viewer(session) is not None:
        return redirect(dash, target, session)
    notice = "Your GitHub session expired; sign in again." if expired else None
    return _login_form(request, dash, session, target, notice, 200)


@router.post("/login", response_model=None)
async def login_with_token(
    request: Request,
    token: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    """Sign the local admin in with the local token typed into the form."""
    dash = dashboard(request)
    session = dash.codec.load(request)
    await check_csrf(request, session)
    target = safe_next(next)
    if not token or not _token_ok(dash, token):
        return _login_form(request, dash, session, target, "That token is not valid.", 401)
    return redirect(dash, target, session.signed_in("local", "local"))


def _login_form(
    request: Request, dash: Dashboard, session: Session, target: str, error: str | None, status: int
) -> HTMLResponse:
    return dash.page(request, session, "login.html", status=status, error=error, next=target)


@router.get("/login/github")
async def github_start(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> RedirectResponse:
    """Send the browser to GitHub with a one-time ``state`` bound to this browser's session."""
    dash = dashboard(request)
    if dash.oauth is None:
        raise PageError(
            404, "Sign-in with GitHub is not configured (GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET)."
        )
    session = dash.codec.load(request)
    session.oauth_state = secrets.token_urlsafe(24)
    session.next = safe_next(next)
    session.changed = True
    return redirect(dash, dash.oauth.authorize_url(dash.callback_url, session.oauth_state), session)


@router.get("/login/github/callback")
async def github_callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(max_length=200)] = None,
) -> RedirectResponse:
    """Finish the OAuth flow: check ``state``, exchange ``code``, start the user's session."""
    dash = dashboard(request)
    if dash.oauth is None:
        raise PageError(404, "Sign-in with GitHub is not configured.")
    session = dash.codec.load(request)
    expected = session.oauth_state
    if not code or not state or not expected or not hmac.compare_digest(state.encode(), expected.encode()):
        # A forged or replayed callback (login CSRF): never exchange its code.
        raise PageError(403, "This sign-in link is not valid any more. Start again from the sign-in page.")
    try:
        user = await dash.oauth.sign_in(code, dash.callback_url)
    except SignInFailed as exc:
        log.info("GitHub sign-in failed: %s", exc)
        raise PageError(502, "GitHub did not complete the sign-in. Try again.") from None
    target = safe_next(session.next)
    log.info("dashboard: %s signed in with GitHub", user.login)
    return redirect(dash, target, session.signed_in(user.login, "github", user.token))


@router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    """Sign out (a POST with the CSRF token, so another site cannot sign you out)."""
    dash = dashboard(request)
    session = dash.codec.load(request)
    await check_csrf(request, session)
    if session.user and session.kind == "github":
        dash.access.forget(session.user)
    response = redirect(dash, "/login")
    dash.codec.clear(response)
    return response
