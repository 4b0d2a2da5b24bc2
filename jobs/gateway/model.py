"""The model gateway of one run: key injection, model allow-list, metering, budget stop.

A sandbox never holds a model key. It holds a per-run gateway token, and its ``*_BASE_URL``
points (through the in-container forwarder) at this gateway, which listens on a Unix socket in the
run's directory. For each request the gateway

1. checks the token (``x-api-key`` or ``Authorization: Bearer``, compared in constant time) —
   once the run ends the token is revoked and the socket removed, so it is useless afterwards;
2. allows only the profile's models and only the model endpoints (Anthropic ``/v1/messages``
   and ``/v1/messages/count_tokens``; OpenAI ``/v1/chat/completions`` and ``/v1/responses``);
3. refuses a call once the run's budget is used up;
4. replaces the token with the real key and forwards the request (body unchanged, except that a
   streamed Chat Completions request is asked for its usage, ``stream_options.include_usage``);
5. meters input and output tokens and cost from the provider's response as it streams through
   (:mod:`jobs.gateway.meter`), cutting the stream with an error event in the provider's format
   when the budget runs out mid-answer, and reports each call's usage (``on_usage``).

Bytes are relayed as they arrive; responses are requested uncompressed so they can be metered.
The server side is uvicorn and Starlette; the provider side is aiohttp, whose C parser hands over
whatever has arrived in one piece — httpx's pure-Python HTTP/1.1 parser costs a call per provider
chunk, which made the gateway the slowest stage of a fast stream (``bench/gateway.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from jobs.gateway.meter import Api, CallMeter, RunMeter, SSEScanner, Usage

log = logging.getLogger(__name__)

Provider = Literal["anthropic", "openai"]
MAX_BODY = 32 * 1024 * 1024
MAX_CONNECTIONS = 64  # per run; more get 503
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-encoding",
    "accept-encoding",
}
_CREDENTIALS = {"authorization", "x-api-key", "api-key", "openai-organization", "openai-project"}


@dataclass(frozen=True)
class Upstream:
    """Where one provider's API is and the key the gateway adds (never seen by the sandbox)."""

    base_url: str  # Anthropic: without /v1 (the SDK's ANTHROPIC_BASE_URL); OpenAI: with /v1
    key: str | None  # None: a local server that takes no key


@dataclass(frozen=True)
class _Route:
    provider: Provider
    api: Api | None  # None: not metered (count_tokens)
    suffix: str  # appended to the upstream's base URL


_ROUTES = {
    "/v1/messages": _Route("anthropic", "anthropic", "/v1/messages"),
    "/v1/messages/count_tokens": _Route("anthropic", None, "/v1/messages/count_tokens"),
    "/v1/chat/completions": _Route("openai", "chat", "/chat/completions"),
    "/v1/responses": _Route("openai", "responses", "/responses"),
}


def _error(provider: Provider, status: int, kind: str, message: str) -> JSONResponse:
    """An error body in the provider's own format, so the CLI reports it as the API's message."""
    if provider == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return JSONResponse(body, status_code=status, headers={"x-should-retry": "false"})


def _stream_error(api: Api, message: str) -> bytes:
    """A terminal error event in the stream's own format (the budget ran out mid-answer)."""
    if api == "anthropic":
        data = {"type": "error", "error": {"type": "budget_exceeded", "message": message}}
        return f"event: error\ndata: {json.dumps(data)}\n\n".encode()
    if api == "responses":
        event = {"type": "error", "code": "budget_exceeded", "message": message, "param": None}
        return f"event: error\ndata: {json.dumps(event)}\n\n".encode()
    body = {"error": {"message": message, "type": "budget_exceeded", "code": "budget_exceeded"}}
    return f"data: {json.dumps(body)}\n\n".encode()


async def _read_capped(request: Request) -> bytes | None:
    """The request body, or ``None`` past :data:`MAX_BODY` (read no further: a hostile sandbox
    must not make the worker hold an unbounded body)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_BODY:
            return None
        parts.append(part)
    return b"".join(parts)


class _QuietServer(uvicorn.Server):
    """uvicorn embedded in the worker: it must not take over the process's signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ModelGateway:
    """One run's gateway; :meth:`start` it on a bound Unix socket, :meth:`close` it with the run."""

    def __init__(
        self,
        *,
        token: str,
        upstreams: dict[Provider, Upstream],
        models: frozenset[str] | None,
        meter: RunMeter,
        on_usage: Callable[[Usage], None] | None = None,
        on_exhausted: Callable[[str], None] | None = None,
        on_refused: Callable[[str, str], None] | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        """``models``: the names a request may ask for (``None``: any). ``on_usage`` gets each
        call's metered usage; ``on_exhausted`` the reason once the budget is used up;
        ``on_refused`` ``(path, reason)`` for every request turned away."""
        self._token: str | None = token
        self.upstreams = upstreams
        self.models = models
        self.meter = meter
        self.on_usage = on_usage
        self.on_exhausted = on_exhausted
        self.on_refused = on_refused
        self.exhausted: str | None = None
        self.timeout_s = timeout_s
        self._client: aiohttp.ClientSession | None = None
        self._server: _QuietServer | None = None
        self._serving: Any = None
        routes = [Route(path, self._handle, methods=["POST"]) for path in _ROUTES]
        self.app = Starlette(routes=routes)
        self.app.add_exception_handler(404, self._not_found)
        self.app.add_exception_handler(405, self._not_found)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (a bound Unix socket) in the running event loop."""
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=self.timeout_s),
            skip_auto_headers=("User-Agent",),
        )
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # The sandbox may open connections to the socket directly: bound what it can hold.
            limit_concurrency=MAX_CONNECTIONS,
        )
        self._server = _QuietServer(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]), name="model-gateway")
        while not self._server.started:
            if self._serving.done():
                self._serving.result()  # raises what stopped it
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        """Revoke the token, stop serving (cutting open streams) and release the client."""
        self._token = None
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            with contextlib.suppress(Exception):
                await self._serving
        if self._client is not None:
            await self._client.close()

    # -- requests -------------------------------------------------------------------------------

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        provider: Provider = "anthropic" if "messages" in request.url.path else "openai"
        self._refused(request.url.path, "not a model endpoint")
        return _error(provider, 404, "not_found_error", f"{request.url.path} is not served by the gateway")

    def _refused(self, path: str, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(path, reason)

    def _authorized(self, request: Request) -> bool:
        token = self._token
        if token is None:
            return False
        bearer = request.headers.get("authorization", "")
        presented = request.headers.get("x-api-key") or (
            bearer[7:] if bearer[:7].lower() == "bearer " else ""
        )
        return hmac.compare_digest(presented.encode(), token.encode())

    async def _handle(self, request: Request) -> Response:
        route = _ROUTES[request.url.path]
        provider = route.provider
        if not self._authorized(request):
            self._refused(request.url.path, "bad or expired gateway token")
            return _error(provider, 401, "authentication_error", "invalid gateway token for this run")
        upstream = self.upstreams.get(provider)
        if upstream is None:
            self._refused(request.url.path, f"no {provider} key is configured")
            return _error(provider, 403, "permission_error", f"this run has no access to the {provider} API")
        raw = await _read_capped(request)
        if raw is None:
            return _error(provider, 413, "request_too_large", f"request body over {MAX_BODY} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(provider, 400, "invalid_request_error", "the request body is not JSON")
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or (self.models is not None and model not in self.models):
            allowed = ", ".join(sorted(self.models or ()))
            self._refused(request.url.path, f"model {model!r} is not allowed")
            return _error(
                provider, 403, "permission_error", f"model {model!r} is not allowed here (allowed: {allowed})"
            )
        if route.api is not None:
            reason = self.exhausted or self.meter.exceeded()
            if reason is not None:
                self._exhaust(reason)
                return _error(provider, 403, "permission_error", f"the run's budget is used up: {reason}")
        streamed = bool(body.get("stream"))
        if route.api == "chat" and streamed:
            options = body.get("stream_options")
            if not isinstance(options, dict) or options.get("include_usage") is not True:
                body["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
                raw = json.dumps(body).encode()
        headers = {k: v for k, v in request.headers.items() if k not in _HOP and k not in _CREDENTIALS}
        headers["accept-encoding"] = "identity"  # metering reads the bytes it relays
        if upstream.key and provider == "anthropic":
            headers["x-api-key"] = upstream.key
        elif upstream.key:
            headers["authorization"] = f"Bearer {upstream.key}"
        url = upstream.base_url.rstrip("/") + route.suffix
        if request.url.query:
            url += "?" + request.url.query
        assert self._client is not None, "start() the gateway first"
        try:
            response = await self._client.post(url, headers=headers, data=raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(
                provider, 502, "api_error", f"the gateway could not reach the {provider} API: {exc}"
            )
        return await self._relay(route, model, response)

    async def _relay(self, route: _Route, model: str, response: aiohttp.ClientResponse) -> Response:
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
        metered = route.api is not None and response.status < 400
        if response.headers.get("content-type", "").startswith("text/event-stream") and metered:
            assert route.api is not None
            return StreamingResponse(
                self._stream(route.api, model, response), status_code=response.status, headers=headers
            )
        try:
            content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(
                "anthropic" if route.provider == "anthropic" else "openai", 502, "api_error", str(exc)
            )
        finally:
            response.release()
        if metered:
            assert route.api is not None
            call = CallMeter(route.api, model)
            with contextlib.suppress(ValueError):
                call.body(json.loads(content))
            self._settle(call)
        return Response(content, status_code=response.status, headers=headers)

    async def _stream(self, api: Api, model: str, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Relay ``response``'s stream, metering it; stop it where the budget runs out.

        The provider is read by a task of its own into a buffer; whatever has piled up is metered
        and written in one piece. While the client keeps up every chunk goes on at once; when it
        does not, the work batches itself instead of costing a parse and a send per provider chunk.
        """
        call = CallMeter(api, model)
        scanner = SSEScanner()
        pending: list[bytes] = []
        ready = asyncio.Event()

        async def read() -> None:
            # Decoded bytes (aiohttp decompresses should the provider compress despite identity).
            try:
                async for chunk in response.content.iter_any():
                    pending.append(chunk)
                    ready.set()
            finally:
                ready.set()

        reader = asyncio.create_task(read(), name="gateway-stream")
        try:
            while True:
                await ready.wait()
                ready.clear()
                if pending:
                    data = b"".join(pending)
                    pending.clear()
                    for name, event in scanner.feed(data):
                        call.event(name, event)
                    reason = self.meter.exceeded(call)
                    if reason is not None:
                        # Stop before passing on what went past the budget.
                        self._exhaust(reason)
                        yield _stream_error(api, f"the run's budget is used up: {reason}")
                        return
                    yield data
                # Checked after the write too: the reader may have finished (and its wake-up been
                # consumed by clear()) while the batch was taken.
                if reader.done() and not pending:
                    reader.result()  # a provider that broke off mid-stream ends this one too
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            response.close()
            self._settle(call)

    def _settle(self, call: CallMeter) -> None:
        usage = self.meter.settle(call)
        if self.on_usage is not None and (usage.input_tokens or usage.output_tokens):
            self.on_usage(usage)
        reason = self.meter.exceeded()
        if reason is not None:
            self._exhaust(reason)

    def _exhaust(self, reason: str) -> None:
        if self.exhausted is None:
            self.exhausted = reason
            log.info("model gateway: budget used up (%s)", reason)
            if self.on_exhausted is not None:
                self.on_exhausted(reason)
