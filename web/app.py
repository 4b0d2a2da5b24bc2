"""``create_app()``: the FastAPI application with every router mounted."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from core.errors import (
    ConfigError,
    DependencyUnavailable,
    HandoffError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
)
from core.services import Services
from core.settings import Settings
from jobs.services import build_services
from web import api, health, ids
from web.dashboard import mount as mount_dashboard
from web.integrations import build_integrations

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[HandoffError], int]] = [
    (NotFound, 404),
    (InvalidTransition, 409),
    (PermissionDenied, 403),
    (DependencyUnavailable, 503),
    (ConfigError, 422),
]


class _AsciiJSON(JSONResponse):
    """JSON escaped to ASCII: an error about invalid Unicode must itself be encodable."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def invalid_response(errors: Sequence[Any]) -> JSONResponse:
    """422 naming each refused field (``loc``) and why (``msg``); the refused value is not echoed."""
    detail = [
        {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))}
        for e in errors
        if isinstance(e, dict)
    ]
    return _AsciiJSON({"detail": detail}, status_code=422)


def create_app(
    settings: Settings, services_factory: Callable[[Settings], Services] = build_services
) -> FastAPI:
    """Build the app; services are created in the lifespan and closed on shutdown."""

    # Building services does no I/O (connections open lazily), so it can happen here, before the
    # routers of the integrations are mounted.
    services = services_factory(settings)
    services.plug(build_integrations(settings, services))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = services
        # Everything built so far lives as long as the process: move it out of the garbage
        # collector's reach, so full collections (pauses in the tens of ms) stay short.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(title="Handoff", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_response(exc.errors())

    @app.exception_handler(InvalidInput)
    async def _invalid_input(request: Request, exc: InvalidInput) -> JSONResponse:
        return invalid_response([{"type": "value_error", "loc": ["body", exc.field], "msg": exc.problem}])

    @app.exception_handler(HandoffError)
    async def _handoff_error(request: Request, exc: HandoffError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        headers = {"Retry-After": "5"} if status == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        # A database driver that cannot connect surfaces as OSError or a wrapped DBAPI error.
        log.warning("%s %s: dependency error: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": "a dependency is unavailable"}, status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _db_error(request: Request, exc: Exception) -> JSONResponse:
        # The database is down or restarting: tell the client to come back, never a bare 500.
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"})

    app.include_router(api.router)
    app.include_router(ids.router)
    app.include_router(health.router)
    for integration in services.integrations:
        if integration.router is not None:
            app.include_router(integration.router)
    mount_dashboard(app, settings)
    return app
