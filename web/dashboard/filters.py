"""Jinja filters: how times, durations, money and long text read on the dashboard."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlparse

from core.clock import as_utc, utcnow


def when(value: datetime | None) -> str:
    """``2025-03-04 13:05 UTC`` (``—`` for none)."""
    if value is None:
        return "—"
    return as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


def clock(value: datetime | None) -> str:
    """``13:05:09`` (UTC), for log lines."""
    return "" if value is None else as_utc(value).strftime("%H:%M:%S")


def ago(value: datetime | None) -> str:
    """``3 min ago``, ``2 h ago``, ``5 d ago``."""
    if value is None:
        return "—"
    seconds = max(0.0, (utcnow() - as_utc(value)).total_seconds())
    if seconds < 60:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"  # pragma: no cover - unreachable


def duration(seconds: float | None) -> str:
    """``4.2 s``, ``3 min 12 s``, ``1 h 05 min`` (``—`` for none)."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def elapsed(since: datetime | None) -> str:
    """How long ago ``since`` was, as a duration (``12.4 s``)."""
    return "—" if since is None else duration(max(0.0, (utcnow() - as_utc(since)).total_seconds()))


def money(value: float | None) -> str:
    """``$0.0042`` below a cent, ``$0.034`` below a dollar, ``$12.50`` above: runs cost cents."""
    if not value:
        return "$0"
    if value < 0.01:
        return f"${value:.4f}"
    return f"${value:.3f}" if value < 1 else f"${value:,.2f}"


def number(value: int | float | None) -> str:
    """Thousands separated: ``12,345``."""
    return "0" if not value else f"{value:,.0f}"


def first_line(text: str | None, limit: int = 90) -> str:
    """The first non-blank line, cut to ``limit`` characters (a leading ``#`` heading mark dropped)."""
    for line in (text or "").splitlines():
        # Instructions often open with a Markdown heading (or, for the shell agent, a comment).
        line = line.strip().lstrip("#").strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def http_url(value: Any) -> str | None:
    """``value`` if it is an http(s) URL without credentials, else ``None`` (never ``javascript:``)."""
    if not isinstance(value, str):
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or "@" in parsed.netloc:
        return None
    return value


def label(value: str | None) -> str:
    """``timed_out`` → ``timed out``."""
    return (value or "").replace("_", " ")


def query(params: dict[str, Any], **changes: Any) -> str:
    """The query string of ``params`` with ``changes`` applied, empty values dropped."""
    merged = {**params, **changes}
    return urlencode(
        {k: v for k, v in merged.items() if v not in (None, "") and not (k == "offset" and not v)}
    )


FILTERS: dict[str, Callable[..., Any]] = {
    "when": when,
    "clock": clock,
    "ago": ago,
    "duration": duration,
    "elapsed": elapsed,
    "money": money,
    "number": number,
    "first_line": first_line,
    "http_url": http_url,
    "label": label,
    "query": query,
}
