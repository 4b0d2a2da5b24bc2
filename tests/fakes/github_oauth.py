"""A fake GitHub for the dashboard's sign-in: a real HTTP server on a loopback port.

It speaks the parts of github.com and api.github.com the dashboard uses, and records every request
so tests can assert on what was asked:

- ``GET /login/oauth/authorize`` redirects back to ``redirect_uri`` with a one-time ``code`` and the
  ``state`` it was given (a real GitHub asks the user first; this one says yes at once);
- ``POST /login/oauth/access_token`` exchanges the code (client id and secret checked) for a token,
  or answers 200 with ``{"error": "bad_verification_code"}`` as GitHub does;
- ``GET /user`` names the token's user; ``GET /repos/{owner}/{name}`` answers 200 with the user's
  ``permissions`` for repositories in ``repos``, and 404 for every other one.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    authorization: str | None


@dataclass
class FakeGitHub:
    """github.com and its API for one user; ``repos`` maps ``owner/name`` to ``read`` or ``write``."""

    login: str = "octocat"
    client_id: str = "Iv1.fakeclientid"
    client_secret: str = "fake-client-secret-do-not-leak"
    repos: dict[str, str] = field(default_factory=lambda: {"octo/demo": "write"})
    requests: list[Recorded] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> login
    _codes: dict[str, str] = field(default_factory=dict)  # code -> redirect_uri
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Base URL (serves both the web and the API paths)."""
        return f"http://127.0.0.1:{self.port}"

    def calls(self, path_prefix: str) -> list[Recorded]:
        """Recorded requests whose path starts with ``path_prefix``."""
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    # ------------------------------------------------------------------ endpoints

    async def _record(self, request: Request) -> Recorded:
        form: dict[str, str] = {}
        if request.method == "POST":
            form = {k: str(v) for k, v in (await request.form()).items()}
        entry = Recorded(
            request.method,
            request.url.path,
            dict(request.query_params),
            form,
            request.headers.get("authorization"),
        )
        self.requests.append(entry)
        return entry

    async def authorize(self, request: Request) -> Response:
        call = await self._record(request)
        if call.query.get("client_id") != self.client_id:
            return Response("unknown client_id", status_code=404)
        code = secrets.token_hex(10)
        redirect_uri = call.query["redirect_uri"]
        self._codes[code] = redirect_uri
        query = urlencode({"code": code, "state": call.query.get("state", "")})
        return RedirectResponse(f"{redirect_uri}?{query}", status_code=302)

    async def access_token(self, request: Request) -> Response:
        call = await self._record(request)
        if (
            call.form.get("client_id") != self.client_id
            or call.form.get("client_secret") != self.client_secret
        ):
            return JSONResponse({"error": "incorrect_client_credentials"})
        code = call.form.get("code", "")
        if self._codes.pop(code, None) is None:  # a code works once
            return JSONResponse({"error": "bad_verification_code"})
        token = "ghu_" + secrets.token_hex(16)
        self.tokens[token] = self.login
        return JSONResponse({"access_token": token, "token_type": "bearer", "scope": ""})

    def _user(self, call: Recorded) -> str | None:
        scheme, _, token = (call.authorization or "").partition(" ")
        return self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None

    async def user(self, request: Request) -> Response:
        call = await self._record(request)
        login = self._user(call)
        if login is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse({"login": login, "id": 1, "name": "The Octocat"})

    async def repo(self, request: Request) -> Response:
        call = await self._record(request)
        if self._user(call) is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        full = f"{request.path_params['owner']}/{request.path_params['name']}"
        role = self.repos.get(full)
        if role is None:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        permissions: dict[str, Any] = {"admin": False, "push": role == "write", "pull": True}
        return JSONResponse({"full_name": full, "private": True, "permissions": permissions})

    # ------------------------------------------------------------------ server

    def app(self) -> Starlette:
        """The ASGI app."""
        return Starlette(
            routes=[
                Route("/login/oauth/authorize", self.authorize),
                Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
                Route("/user", self.user),
                Route("/repos/{owner}/{name}", self.repo),
            ]
        )

    async def __aenter__(self) -> FakeGitHub:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
