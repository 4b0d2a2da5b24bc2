"""The agent's stdout contract: JSON lines with a ``type`` are events, anything else is a ``log``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.clock import as_utc, utcnow
from core.models import EventType

MAX_LINE = 64 * 1024
#: Types only the orchestrator writes: every state, PR link and milestone. A container printing
#: one is recorded as a plain log line, never acted on.
RESERVED_TYPES = frozenset({EventType.status.value})
#: Types an agent (a container's stdout, a CLI translator) may produce.
AGENT_TYPES = frozenset(t.value for t in EventType) - RESERVED_TYPES


@dataclass(frozen=True)
class ParsedEvent:
    """One event, not yet numbered or stored."""

    type: str
    ts: datetime
    data: dict[str, Any]


def parse_line(line: str) -> ParsedEvent:
    """Turn one stdout line of an agent into an event.

    A JSON object whose ``type`` is one of the agent's event types (:data:`AGENT_TYPES`) becomes
    that event (``ts`` from the object when it is a valid ISO timestamp, ``data`` an object or
    wrapped as ``{"value": ...}``); every other line — a reserved type such as ``status`` included —
    is a ``log`` event holding the text. Over-long lines are truncated.
    """
    text = line.rstrip("\r\n")
    if len(text) > MAX_LINE:
        text = text[:MAX_LINE] + f"… [{len(text) - MAX_LINE} characters cut]"
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("type") in AGENT_TYPES:
            return ParsedEvent(type=obj["type"], ts=_parse_ts(obj.get("ts")), data=_as_data(obj.get("data")))
    return ParsedEvent(type=EventType.log.value, ts=utcnow(), data={"text": text})


def _parse_ts(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    return utcnow()


def _as_data(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if value is None:
        return {}
    return {"value": value}
