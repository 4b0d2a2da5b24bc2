"""The egress proxy of one run: the only way out of a sandbox, by allow-list.

An HTTP proxy on a Unix socket in the run's directory, reached from inside the container through
the forwarder as ``HTTPS_PROXY=http://127.0.0.1:<port>`` (and ``HTTP_PROXY``). It understands
``CONNECT host:port`` (HTTPS and anything tunnelled) and absolute-URI requests for plain HTTP
(``GET http://deb.debian.org/...``, as apt sends them). Each destination goes through
:class:`jobs.gateway.policy.EgressPolicy` — allow-listed name, port 443 or 80, every resolved
address public and not this host's — and the proxy then connects to the address it checked.
Every decision, allowed or refused, is reported (``on_decision``) and recorded as a run event; a
refusal answers ``403`` with the reason, so a tool fails at once instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from jobs.gateway.policy import EgressDecision, EgressPolicy

log = logging.getLogger(__name__)

Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
MAX_HEAD = 16 * 1024
MAX_CONNECTIONS = 64  # per run: the sandbox can reach the socket directly, bound what it can hold
_CHUNK = 64 * 1024


async def tcp_connect(address: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the already-checked ``address`` (never a name)."""
    return await asyncio.open_connection(address, port)


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets) as ``(host, port)``; ``ValueError`` when malformed."""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not host:
        raise ValueError("no host")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError("bad port")
    return host.lower(), port


class EgressProxy:
    """One run's proxy; :meth:`start` it on a bound Unix socket, :meth:`close` it with the run."""

    def __init__(
        self,
        policy: EgressPolicy,
        on_decision: Callable[[EgressDecision], None],
        *,
        connect: Connector = tcp_connect,
        connect_timeout_s: float = 15.0,
        idle_timeout_s: float = 300.0,
    ) -> None:
        self.policy = policy
        self.on_decision = on_decision
        self.connect = connect
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (a bound Unix socket) in the running event loop."""
        self._server = await asyncio.start_unix_server(self._client, sock=sock, limit=MAX_HEAD)

    async def close(self) -> None:
        """Stop accepting and cut every open tunnel."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            # Take the request head first (briefly) so the refusal is read, not reset away.
            with contextlib.suppress(
                ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError
            ):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                await self._answer(writer, 503, f"more than {MAX_CONNECTIONS} connections at once")
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:  # one bad client must never take the proxy down
            log.exception("egress proxy: connection failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except asyncio.LimitOverrunError:
            await self._answer(writer, 431, "request head too large")
            return
        if len(head) > MAX_HEAD:
            await self._answer(writer, 431, "request head too large")
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._answer(writer, 400, "not an HTTP request")
            return
        method, target, _version = parts
        if method == "CONNECT":
            try:
                host, port = _split_authority(target, 443)
            except ValueError:
                await self._answer(writer, 400, f"bad CONNECT target {target!r}")
                return
            decision = await self._decide(writer, "CONNECT", host, port)
            if decision is not None:
                await self._tunnel(reader, writer, decision, b"HTTP/1.1 200 Connection established\r\n\r\n")
            return
        url = urlsplit(target)
        if url.scheme != "http" or not url.netloc:
            await self._answer(
                writer, 400, "only CONNECT and absolute http:// requests go through this proxy"
            )
            return
        try:
            host, port = _split_authority(url.netloc.rpartition("@")[2], 80)
        except ValueError:
            await self._answer(writer, 400, f"bad URL {target!r}")
            return
        decision = await self._decide(writer, method, host, port)
        if decision is None:
            return
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        kept = [
            line
            for line in header_lines
            if line and not line.lower().startswith(("proxy-", "connection:", "keep-alive:"))
        ]
        upstream_head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
        await self._tunnel(reader, writer, decision, None, upstream_head.encode("latin-1"))

    async def _decide(
        self, writer: asyncio.StreamWriter, method: str, host: str, port: int
    ) -> EgressDecision | None:
        """The allowed decision, or ``None`` after answering the refusal (``403`` with its reason)."""
        decision = await self.policy.decide(method, host, port)
        self.on_decision(decision)
        if decision.allowed:
            return decision
        await self._answer(writer, 403, f"refused {host}:{port}: {decision.reason}")
        return None

    async def _answer(self, writer: asyncio.StreamWriter, status: int, reason: str) -> None:
        body = f"handoff egress proxy: {reason}\n".encode()
        phrases = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large"}
        phrase = phrases.get(status, "Service Unavailable" if status == 503 else "Bad Gateway")
        writer.write(
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decision: EgressDecision,
        established: bytes | None,
        first: bytes = b"",
    ) -> None:
        assert decision.address is not None
        try:
            up_reader, up_writer = await asyncio.wait_for(
                self.connect(decision.address, decision.port), self.connect_timeout_s
            )
        except (OSError, TimeoutError) as exc:
            self.on_decision(
                EgressDecision(
                    decision.method,
                    decision.host,
                    decision.port,
                    False,
                    f"connection failed: {exc or type(exc).__name__}",
                    decision.address,
                )
            )
            await self._answer(writer, 502, f"could not connect to {decision.host}:{decision.port}")
            return
        try:
            if established:
                writer.write(established)
            if first:
                up_writer.write(first)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await asyncio.wait_for(source.read(_CHUNK), self.idle_timeout_s)
                if not data:
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if sink.can_write_eof():
                    sink.write_eof()
