"""How each run event reads in the log: one line, plus a folded body for tool calls and long output.

The views hold plain text only; templates escape it, so an agent printing ``<script>`` shows the
characters, never runs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.models import RunEvent

# Past these, output is folded behind its first line.
FOLD_LINES = 6
FOLD_CHARS = 600
# What one event may show at most; the rest is cut with a note (the API still has everything).
MAX_BODY = 20_000


@dataclass(frozen=True)
class EventView:
    """One line of the log."""

    seq: int
    type: str
    ts: datetime
    text: str
    body: str | None = None  # shown folded (a <details>) under ``text``


def view(event: RunEvent) -> EventView | None:
    """The log line for ``event``; ``None`` for events not worth a line (heartbeats)."""
    data = event.data if isinstance(event.data, dict) else {}
    kind = event.type
    if kind == "heartbeat":
        return None
    if kind == "tool":
        return _tool(event, data)
    if kind in ("log", "message", "question"):
        text = _str(data.get("text") or data.get("message") or data.get("question") or _compact(data))
        return _long(event, text)
    if kind == "status":
        text = _str(data.get("state", "")).replace("_", " ")
        extra = data.get("reason") or data.get("followup")
        return EventView(event.seq, kind, event.ts, f"{text} — {extra}" if extra else text)
    if kind == "progress":
        step = data.get("step")
        rest = {k: v for k, v in data.items() if k not in ("step", "usage")}
        parts = [_str(step)] if step else []
        parts += [f"{k}={_str(v)}" for k, v in rest.items()]
        return _long(event, " · ".join(parts) or _compact(data))
    if kind == "result":
        return _long(event, _str(data.get("summary") or _compact(data)))
    if kind == "error":
        return _long(event, _str(data.get("message") or _compact(data)))
    return _long(event, _compact(data))


def views(events: Iterable[RunEvent]) -> list[EventView]:
    """Views of ``events`` that are worth a line."""
    return [v for v in (view(e) for e in events) if v is not None]


def _tool(event: RunEvent, data: dict[str, Any]) -> EventView:
    # Agents name the call ``name``/``tool`` and its arguments ``input``/``args``; keep both shapes.
    name = _str(data.get("name") or data.get("tool") or "tool")
    args = data.get("input", data.get("args"))
    output = data.get("output", data.get("result"))
    headline = name
    if args is not None:
        headline += " " + _clip(_compact(args), 100)
    body_parts = []
    if args is not None:
        body_parts.append(_pretty(args))
    if output is not None:
        body_parts.append("→ " + (_str(output) if isinstance(output, str) else _pretty(output)))
    rest = {k: v for k, v in data.items() if k not in ("name", "tool", "input", "args", "output", "result")}
    if rest:
        body_parts.append(_pretty(rest))
    return EventView(event.seq, "tool", event.ts, headline, _cut("\n".join(body_parts), MAX_BODY) or None)


def _long(event: RunEvent, text: str) -> EventView:
    lines = text.splitlines() or [""]
    if len(lines) > FOLD_LINES or len(text) > FOLD_CHARS:
        more = f" … ({len(lines)} lines)" if len(lines) > 1 else " …"
        return EventView(event.seq, event.type, event.ts, _clip(lines[0], 160) + more, _cut(text, MAX_BODY))
    return EventView(event.seq, event.type, event.ts, text)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else _compact(value)


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        return repr(value)


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _clip(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit:,} more characters]"
