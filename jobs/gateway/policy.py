"""Which destinations a sandbox may reach through the egress proxy.

Two checks, both required:

* **the name**: the host must be on the profile's allow-list (``pypi.org`` exactly, or
  ``*.pythonhosted.org`` for any subdomain), and the port must be 443 or 80. IP literals are never
  on the list.
* **the address**: the proxy resolves the name itself and refuses when *any* address it gets is
  not a public unicast address — loopback, private ranges (10/8, 172.16/12, 192.168/16, fc00::/7),
  link-local (169.254/16 with the cloud metadata service at 169.254.169.254, fe80::/10), shared
  (100.64/10), multicast, reserved and documentation ranges, IPv4 inside IPv6 (mapped, 6to4,
  Teredo) — or one of this machine's own addresses. It then connects to the address it checked,
  never re-resolving, so a DNS answer that changes in between (rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.config import normalize_domain

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
ALLOWED_PORTS = (443, 80)


@dataclass(frozen=True)
class EgressDecision:
    """What the proxy decided about one connection, recorded as a run event."""

    method: str
    host: str
    port: int
    allowed: bool
    reason: str
    address: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def event_data(self) -> dict[str, object]:
        """The run event's ``data``: a log line plus the structured decision."""
        verb = "allowed" if self.allowed else "refused"
        target = f"{self.method} {self.host}:{self.port}"
        detail = {"method": self.method, "host": self.host, "port": self.port, "allowed": self.allowed}
        detail["reason"] = self.reason
        if self.address:
            detail["address"] = self.address
        return {"text": f"egress {verb}: {target} ({self.reason})", "egress": {**detail, **self.extra}}


def domain_allowed(host: str, allow: Iterable[str]) -> bool:
    """True when ``host`` is on ``allow`` (exact, or below a ``*.`` entry)."""
    name = host.lower().rstrip(".")
    for entry in allow:
        if entry.startswith("*."):
            if name.endswith(entry[1:]):
                return True
        elif name == entry:
            return True
    return False


def forbidden_address(address: IPAddress, own: set[IPAddress] | None = None) -> str | None:
    """Why ``address`` must not be reached from a sandbox, or ``None`` for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        for embedded in (address.ipv4_mapped, address.sixtofour, address.teredo and address.teredo[1]):
            if embedded is not None:
                return "IPv4 address inside IPv6"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address (cloud metadata)"
    if address.is_multicast:
        return "multicast address"
    if own and address in own:
        return "an address of this host"
    if address.is_private or not address.is_global:
        return "private or reserved address"
    return None


def host_addresses(proc: Path = Path("/proc/net")) -> set[IPAddress]:
    """This machine's own addresses (IPv4 from the kernel's local routes, IPv6 per interface)."""
    found: set[IPAddress] = set()
    try:
        lines = (proc / "fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for prev, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            candidate = prev.strip().lstrip("|-+` ").strip()
            with contextlib.suppress(ValueError):
                found.add(ipaddress.IPv4Address(candidate))
    try:
        for row in (proc / "if_inet6").read_text().splitlines():
            raw = row.split()[0]
            found.add(ipaddress.IPv6Address(":".join(raw[i : i + 4] for i in range(0, 32, 4))))
    except (OSError, ValueError, IndexError):
        pass
    return found


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class EgressPolicy:
    """A profile's allow-list and the address rules; :meth:`decide` checks one destination."""

    def __init__(
        self,
        allow: Sequence[str],
        *,
        ports: Sequence[int] = ALLOWED_PORTS,
        resolve: Resolver = system_resolve,
        own_addresses: Callable[[], set[IPAddress]] = host_addresses,
        resolve_timeout_s: float = 10.0,
    ) -> None:
        self.allow = tuple(normalize_domain(entry) for entry in allow)
        self.ports = tuple(ports)
        self.resolve = resolve
        self.own_addresses = own_addresses
        self.resolve_timeout_s = resolve_timeout_s

    async def decide(self, method: str, host: str, port: int) -> EgressDecision:
        """Allowed with the checked address to connect to, or refused with the reason."""

        def refuse(reason: str, address: str | None = None) -> EgressDecision:
            return EgressDecision(method, host, port, False, reason, address)

        if port not in self.ports:
            return refuse(f"port {port} is not allowed (only {', '.join(map(str, self.ports))})")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            why = forbidden_address(literal, self.own_addresses())
            return refuse(why or "IP addresses are not on the allow-list", str(literal))
        if not domain_allowed(host, self.allow):
            return refuse("not on the allow-list")
        try:
            found = await asyncio.wait_for(self.resolve(host, port), self.resolve_timeout_s)
        except (OSError, TimeoutError, UnicodeError) as exc:
            return refuse(f"does not resolve: {exc or type(exc).__name__}")
        if not found:
            return refuse("does not resolve")
        own = self.own_addresses()
        for text in found:
            try:
                address = ipaddress.ip_address(text.split("%")[0])
            except ValueError:
                return refuse(f"resolves to an unusable address {text!r}")
            why = forbidden_address(address, own)
            if why is not None:
                return refuse(f"resolves to {text}: {why}", text)
        return EgressDecision(method, host, port, True, "on the allow-list", found[0])
