"""FastAPI dependencies: the service container and API authentication."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from core.services import Services


def get_services(request: Request) -> Services:
    """The services built in the lifespan."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (and the in-process test client)."""
    if host in (None, "localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_token(request: Request, svc: ServicesDep) -> None:
    """Require ``Authorization: Bearer <HANDOFF_API_TOKEN>``; without a token only loopback may call."""
    token = svc.settings.handoff_api_token
    if token is None:
        client = request.client.host if request.client else None
        if not is_loopback(client):
            raise HTTPException(403, "HANDOFF_API_TOKEN is not set: the API only answers loopback clients")
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
