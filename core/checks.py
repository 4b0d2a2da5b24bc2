"""The result of one ``handoff doctor`` check, shared by every integration's doctor.

``off`` is something not configured (reported, never a failure); ``warn`` works but deserves
attention; only ``fail`` (something configured that is broken) makes ``handoff doctor`` exit 1.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlparse


class CheckStatus(StrEnum):
    """How one check came out."""

    ok = "ok"
    off = "off"
    warn = "warn"
    fail = "fail"


@dataclass(frozen=True)
class Check:
    """One line of ``handoff doctor``: what was checked, how it came out, and what to do."""

    name: str
    status: CheckStatus
    detail: str

    @classmethod
    def ok(cls, name: str, detail: str) -> Check:
        """It works."""
        return cls(name, CheckStatus.ok, detail)

    @classmethod
    def off(cls, name: str, detail: str) -> Check:
        """Not configured; ``detail`` says how to turn it on."""
        return cls(name, CheckStatus.off, detail)

    @classmethod
    def warn(cls, name: str, detail: str) -> Check:
        """Works, with a caveat."""
        return cls(name, CheckStatus.warn, detail)

    @classmethod
    def fail(cls, name: str, detail: str) -> Check:
        """Configured and broken; ``detail`` says what to do."""
        return cls(name, CheckStatus.fail, detail)

    @property
    def broken(self) -> bool:
        """True for a failure."""
        return self.status is CheckStatus.fail


def public_url_problem(url: str) -> str | None:
    """Why GitHub or Slack could not reach ``url``, or ``None`` when it looks reachable."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.scheme not in ("http", "https") or not host:
        return f"{url!r} is not an http(s) URL"
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return f"{host} is a local name"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_global:
        return f"{host} is not a public address"
    return None
