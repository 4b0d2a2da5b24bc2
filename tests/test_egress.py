"""The egress proxy over a real Unix socket: allow-list, ports, resolved-address checks, events.

Each attack is first shown to work through a naive relay (a proxy that connects wherever it is
told), so a refusal by Handoff's proxy proves the defence, not a broken attack. Names resolve
through a scripted resolver where a test needs a public answer (nothing here may leave loopback);
the connector is recorded, so "refused" also means "never connected".
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import normalize_domain
from jobs.gateway.egress import EgressProxy
from jobs.gateway.policy import (
    EgressDecision,
    EgressPolicy,
    domain_allowed,
    forbidden_address,
    host_addresses,
)
from jobs.gateway.session import RunGateway

PUBLIC = "151.101.0.223"  # what the scripted resolver answers for allow-listed names


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback address"),
        ("127.8.9.10", "loopback address"),
        ("::1", "loopback address"),
        ("169.254.169.254", "link-local address (cloud metadata)"),
        ("fe80::1", "link-local address (cloud metadata)"),
        ("10.0.0.5", "private or reserved address"),
        ("172.16.3.4", "private or reserved address"),
        ("192.168.1.1", "private or reserved address"),
        ("100.64.0.1", "private or reserved address"),
        ("fc00::1", "private or reserved address"),
        ("0.0.0.0", "private or reserved address"),
        ("192.0.2.7", "private or reserved address"),
        ("224.0.0.251", "multicast address"),
        ("::ffff:127.0.0.1", "IPv4 address inside IPv6"),
        ("::ffff:169.254.169.254", "IPv4 address inside IPv6"),
        ("2002:a9fe:a9fe::1", "IPv4 address inside IPv6"),
        ("93.184.216.34", None),
        ("2606:4700::6810:84e5", None),
    ],
)
def test_forbidden_addresses(address: str, reason: str | None) -> None:
    assert forbidden_address(ipaddress.ip_address(address)) == reason


def test_this_hosts_own_addresses_are_forbidden_even_when_public() -> None:
    own = host_addresses()
    assert ipaddress.ip_address("127.0.0.1") in own
    public = ipaddress.ip_address("93.184.216.34")
    assert forbidden_address(public, own | {public}) == "an address of this host"


def test_allow_list_entries_and_matching() -> None:
    assert normalize_domain(" PyPI.org. ") == "pypi.org"
    assert normalize_domain("*.pythonhosted.org") == "*.pythonhosted.org"
    for bad in ("10.0.0.1", "localhost", "https://pypi.org", "pypi.org:443", "*", "a..b", "-x.org"):
        with pytest.raises(ValueError):
            normalize_domain(bad)
    allow = ["pypi.org", "*.pythonhosted.org"]
    assert domain_allowed("PYPI.ORG.", allow) and domain_allowed("files.pythonhosted.org", allow)
    assert not domain_allowed("evilpypi.org", allow) and not domain_allowed("pythonhosted.org", allow)
    assert not domain_allowed("pypi.org.evil.com", allow)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hgw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Upstream:
    """A loopback server standing in for the world: echoes ``pong <what it got>`` once."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> Upstream:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(4096)
            self.received.append(data)
            writer.write(b"pong " + data)
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


class Harness:
    """Scripted DNS, a recording connector that sends every connection to the loopback upstream."""

    def __init__(self, upstream: Upstream, dns: dict[str, list[str]]) -> None:
        self.upstream = upstream
        self.dns = dns
        self.connected: list[tuple[str, int]] = []
        self.decisions: list[EgressDecision] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        if host not in self.dns:
            raise OSError(f"no such host {host}")
        return self.dns[host]

    async def connect(self, address: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.connected.append((address, port))
        return await asyncio.open_connection("127.0.0.1", self.upstream.port)


async def _ask(path: Path, request: bytes, payload: bytes = b"ping") -> bytes:
    """Send ``request`` to the proxy on ``path``; after a 200 to CONNECT, ``payload`` through it."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200") and request.startswith(b"CONNECT"):
        writer.write(payload)
        await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return head + rest


@pytest.fixture
async def proxy(short_dir: Path) -> AsyncIterator[tuple[Harness, Path]]:
    async with Upstream() as upstream:
        harness = Harness(
            upstream,
            {
                "pypi.org": [PUBLIC],
                "files.pythonhosted.org": [PUBLIC, "2a04:4e42::223"],
                "rebind.pythonhosted.org": [PUBLIC, "169.254.169.254"],
                "internal.pythonhosted.org": ["10.0.0.5"],
                "localhost.localdomain": ["127.0.0.1"],
                "evil.example": [PUBLIC],
            },
        )
        policy = EgressPolicy(
            ["pypi.org", "*.pythonhosted.org", "localhost.localdomain"], resolve=harness.resolve
        )
        server = EgressProxy(policy, harness.decisions.append, connect=harness.connect)
        path = short_dir / "egress.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen()
        await server.start(sock)
        try:
            yield harness, path
        finally:
            await server.close()


async def _naive_proxy(path: Path, harness: Harness) -> asyncio.AbstractServer:
    """The unguarded path: a CONNECT relay that resolves nothing and checks nothing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        host, _, port = head.split(" ")[1].rpartition(":")
        up_reader, up_writer = await harness.connect(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        up_writer.write(await reader.read(4096))
        writer.write(await up_reader.read(4096))
        writer.close()

    return await asyncio.start_unix_server(handle, str(path))


ATTACKS = [
    ("host-port", b"CONNECT 127.0.0.1:8000 HTTP/1.1\r\n\r\n", "port 8000 is not allowed (only 443, 80)"),
    ("host-https", b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n", "loopback address"),
    ("listed-loopback", b"CONNECT localhost.localdomain:443 HTTP/1.1\r\n\r\n", "resolves to 127.0.0.1"),
    ("metadata", b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n", "link-local address (cloud metadata)"),
    ("private", b"CONNECT 10.0.0.5:443 HTTP/1.1\r\n\r\n", "private or reserved address"),
    ("ipv6-mapped", b"CONNECT [::ffff:127.0.0.1]:443 HTTP/1.1\r\n\r\n", "IPv4 address inside IPv6"),
    ("off-list", b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n", "not on the allow-list"),
    ("bad-port", b"CONNECT pypi.org:22 HTTP/1.1\r\n\r\n", "port 22 is not allowed (only 443, 80)"),
    ("resolves-private", b"CONNECT internal.pythonhosted.org:443 HTTP/1.1\r\n\r\n", "resolves to 10.0.0.5"),
    ("rebinding", b"CONNECT rebind.pythonhosted.org:443 HTTP/1.1\r\n\r\n", "resolves to 169.254.169.254"),
    ("plain-http-metadata", b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\r\n", "link-local"),
    ("unresolvable", b"CONNECT nowhere.pythonhosted.org:443 HTTP/1.1\r\n\r\n", "does not resolve"),
]


@pytest.mark.parametrize(("request_bytes", "reason"), [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
async def test_each_attack_works_unguarded_and_is_refused_and_recorded(
    proxy: tuple[Harness, Path], short_dir: Path, request_bytes: bytes, reason: str
) -> None:
    harness, path = proxy
    if request_bytes.startswith(b"CONNECT") and b"nowhere" not in request_bytes and b"[" not in request_bytes:
        naive = await _naive_proxy(short_dir / "naive.sock", harness)
        try:
            answer = await _ask(short_dir / "naive.sock", request_bytes)
        finally:
            naive.close()
        assert answer.endswith(b"pong ping")  # the unguarded relay connected and got an answer
        harness.connected.clear()
    answer = await _ask(path, request_bytes)
    assert answer.startswith(b"HTTP/1.1 403 Forbidden") and reason.encode() in answer
    assert harness.connected == []  # never connected anywhere
    (decision,) = harness.decisions
    assert not decision.allowed and reason in decision.reason
    data: dict[str, Any] = decision.event_data()
    assert data["text"].startswith("egress refused: ") and data["egress"]["allowed"] is False


async def test_allow_listed_https_and_http_go_through_to_the_checked_address(
    proxy: tuple[Harness, Path],
) -> None:
    harness, path = proxy
    tunnel = await _ask(path, b"CONNECT files.pythonhosted.org:443 HTTP/1.1\r\nHost: x\r\n\r\n", b"TLS bytes")
    assert tunnel == b"HTTP/1.1 200 Connection established\r\n\r\npong TLS bytes"
    plain = await _ask(
        path,
        b"GET http://pypi.org/simple/ HTTP/1.1\r\nHost: pypi.org\r\nProxy-Authorization: Basic eA==\r\n"
        b"Proxy-Connection: keep-alive\r\n\r\n",
    )
    assert plain.startswith(b"pong GET /simple/ HTTP/1.1\r\nHost: pypi.org\r\nConnection: close\r\n\r\n")
    assert harness.connected == [(PUBLIC, 443), (PUBLIC, 80)]
    assert [(d.method, d.host, d.allowed, d.address) for d in harness.decisions] == [
        ("CONNECT", "files.pythonhosted.org", True, PUBLIC),
        ("GET", "pypi.org", True, PUBLIC),
    ]


async def test_not_a_proxy_request_and_a_failed_connection(
    proxy: tuple[Harness, Path], short_dir: Path
) -> None:
    harness, path = proxy
    assert (await _ask(path, b"GET /simple/ HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await _ask(path, b"GET https://pypi.org/ HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await _ask(path, b"CONNECT :443 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")
    harness.upstream.port = 1  # nothing listens there
    answer = await _ask(path, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502")
    assert [d.allowed for d in harness.decisions] == [True, False]
    assert harness.decisions[1].reason.startswith("connection failed")


async def test_the_run_gateway_records_every_decision_and_sets_the_proxy_variables(short_dir: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    gateway = RunGateway(
        "r_egress", short_dir, 1000, 1000, lambda k, d: events.append((k, d)), egress_allow=[]
    )
    async with gateway as access:
        assert access.env["HTTPS_PROXY"] == access.env["http_proxy"] == "http://127.0.0.1:3128"
        assert access.env["NO_PROXY"] == "127.0.0.1,localhost" and "ANTHROPIC_API_KEY" not in access.env
        assert access.listeners == {3128: "/handoff/gw/egress.sock"}
        sock = access.mounts[0].source / "egress.sock"
        assert oct(sock.stat().st_mode & 0o777) == "0o600" and sock.stat().st_uid == 1000
        assert oct(access.mounts[0].source.stat().st_mode & 0o777) == "0o711"
        answer = await _ask(sock, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 403") and b"not on the allow-list" in answer
    assert events == [
        (
            "log",
            {
                "text": "egress refused: CONNECT pypi.org:443 (not on the allow-list)",
                "egress": {
                    "method": "CONNECT",
                    "host": "pypi.org",
                    "port": 443,
                    "allowed": False,
                    "reason": "not on the allow-list",
                },
            },
        )
    ]
    assert not sock.exists()
    assert access.wrap(["claude", "-p", "x"]) == [
        "/handoff/bin/handoff-forward",
        "-l",
        "127.0.0.1:3128=/handoff/gw/egress.sock",
        "--",
        "claude",
        "-p",
        "x",
    ]


async def test_connections_past_the_cap_are_turned_away(
    proxy: tuple[Harness, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobs.gateway.egress as egress

    _harness, path = proxy
    monkeypatch.setattr(egress, "MAX_CONNECTIONS", 2)
    idle = [await asyncio.open_unix_connection(str(path)) for _ in range(2)]
    await asyncio.sleep(0.1)  # both are being served (waiting for a request head)
    answer = await _ask(path, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable")
    for _reader, writer in idle:
        writer.close()
