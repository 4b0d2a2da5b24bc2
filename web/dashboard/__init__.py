"""The dashboard: server-rendered pages of tasks and runs, with a live log over server-sent events.

``mount(app, settings)`` adds the pages, the sign-in routes and the static files to the app.

Modules: ``context`` (state, who sees what), ``session`` (signed cookie, CSRF), ``github`` (OAuth
and the repository access cache), ``auth`` (sign-in routes), ``routes`` (pages and buttons),
``live`` (the SSE stream), ``automations`` (rules, firings and skips), ``queries``, ``events`` (log lines), ``diff``, ``charts``, ``filters``.

Static files are served by the app itself, nothing from a CDN: ``static/htmx.min.js`` is htmx
2.0.11 from the ``htmx.org`` npm package (0BSD licence), vendored as is; ``live.js`` is ours.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from core.settings import Settings
from web.dashboard import auth, automations, live, routes
from web.dashboard.session import PageError
from web.dashboard.state import HERE, SECURITY_HEADERS, STATIC_PREFIX, Dashboard

__all__ = ["Dashboard", "mount"]


def mount(app: FastAPI, settings: Settings) -> Dashboard:
    """Add the dashboard to ``app``; its state is kept on ``app.state.dashboard``."""
    dash = Dashboard(settings)
    app.state.dashboard = dash

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        if exc.location is not None:
            return RedirectResponse(exc.location, status_code=exc.status, headers=SECURITY_HEADERS)
        if "text/event-stream" in request.headers.get("accept", ""):
            return Response(exc.message, status_code=exc.status, media_type="text/plain")
        session = dash.codec.load(request)
        viewer = dash.viewer(session)
        response: HTMLResponse = dash.page(
            request,
            session,
            "error.html",
            viewer=viewer,
            status=exc.status,
            code=exc.status,
            message=exc.message,
        )
        return response

    app.add_exception_handler(PageError, page_error)
    app.include_router(auth.router)
    app.include_router(routes.router)
    app.include_router(automations.router)
    app.include_router(live.router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=HERE / "static"), name="dashboard-static")
    return dash
