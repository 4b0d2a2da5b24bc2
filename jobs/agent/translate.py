"""Translators from external agent CLIs' output into Handoff run events.

* **Claude Code** — ``claude -p … --output-format stream-json --verbose``: one JSON object per line:
  ``system``/``init`` (session, model, tools), ``assistant`` messages (text and ``tool_use``
  blocks, with the API usage of the call), ``user`` messages (``tool_result`` blocks), and a final
  ``result`` with the answer, ``num_turns``, ``total_cost_usd`` and the total ``usage``.
* **Codex CLI** — ``codex exec --json …``: ``thread.started``, ``turn.started``,
  ``item.started``/``item.updated``/``item.completed`` (``agent_message``, ``reasoning``,
  ``command_execution``, ``file_change``, ``mcp_tool_call``, ``web_search``, ``todo_list``,
  ``error``), ``turn.completed`` with ``usage``, ``turn.failed`` and ``error``. It reports no cost,
  so the cost comes from the price table. A top-level ``error`` is a retry notice ("Reconnecting...
  2/5") and an ``error`` item a warning (unknown model metadata): both are logged; only
  ``turn.failed`` is an error.

``tests/data/agent`` holds streams recorded from the real CLIs (Claude Code 2.1.332, Codex 0.171.0)
running in their images against the fake provider, beside older hand-checked ones.

Usage becomes ``progress`` events with ``data.usage`` (input/output tokens and cost), which the
event pump adds up for the run and its budgets — unless the run's model gateway meters the calls
(``metered=True``): then the CLI's own figures, which a hostile agent could forge, are not counted. Claude Code repeats a call's usage on every content
block of that call, so usage is counted once per message id, and its final ``result`` (the
authoritative totals) corrects whatever the running count missed. Lines that are not JSON become
``log`` events, as for any agent.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from core.config import Price
from core.usage import TokenUsage

Event = tuple[str, dict[str, Any]]
_CLIP = 4000


class Translator(Protocol):
    """Turns one CLI's stdout lines into run events."""

    model: str | None
    steps: int

    def feed(self, line: str) -> list[Event]:
        """The events for one stdout line."""
        ...

    def finish(self) -> list[Event]:
        """Events owed once the CLI has exited (e.g. the final summary)."""
        ...


def translator_for(output: str, price: Price | None = None, *, metered: bool = False) -> Translator | None:
    """The translator for a profile's ``output`` format (``None`` for Handoff's own events).

    ``metered``: the gateway counts the run's tokens, so the translator reports none.
    """
    if output == "claude-code":
        return ClaudeCodeTranslator(price, metered=metered)
    if output == "codex":
        return CodexTranslator(price, metered=metered)
    return None


def _clip(text: Any) -> str:
    value = text if isinstance(text, str) else json.dumps(text)
    return value if len(value) <= _CLIP else value[:_CLIP] + "…"


def _parse(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _Usage:
    """Running usage totals, emitted as deltas."""

    def __init__(self, price: Price | None, enabled: bool = True) -> None:
        self.price = price
        self.enabled = enabled
        self.tokens_in = self.tokens_out = 0
        self.cost = 0.0

    def delta(self, tokens_in: int, tokens_out: int, cost: float | None = None) -> Event | None:
        if not self.enabled:
            return None
        if cost is None:
            cost = self.price.cost(tokens_in, tokens_out) if self.price else 0.0
        if not (tokens_in or tokens_out or cost):
            return None
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cost += cost
        return "progress", {"step": "model", "usage": TokenUsage(tokens_in, tokens_out, cost).wire()}


class ClaudeCodeTranslator:
    """Claude Code's ``stream-json`` output as run events."""

    def __init__(self, price: Price | None = None, *, metered: bool = False) -> None:
        self.model: str | None = None
        self.steps = 0
        self._usage = _Usage(price, enabled=not metered)
        self._seen: dict[str, tuple[int, int]] = {}  # message id -> usage counted so far
        self._tools: dict[str, str] = {}  # tool_use id -> name

    def feed(self, line: str) -> list[Event]:
        """See :class:`Translator`."""
        obj = _parse(line)
        if obj is None:
            return [("log", {"text": line})] if line.strip() else []
        kind = obj.get("type")
        if kind == "system":
            return self._system(obj)
        if kind == "assistant":
            return self._assistant(obj.get("message") or {})
        if kind == "user":
            return self._user(obj.get("message") or {})
        if kind == "result":
            return self._result(obj)
        return []  # stream_event (partial messages) and future types: nothing to report

    def finish(self) -> list[Event]:
        """See :class:`Translator`."""
        return []

    def _system(self, obj: dict[str, Any]) -> list[Event]:
        if obj.get("subtype") == "init":
            self.model = obj.get("model") or self.model
            data = {"step": "agent", "agent": "claude-code", "model": self.model}
            data.update({k: obj[k] for k in ("session_id", "cwd", "permissionMode") if k in obj})
            if isinstance(obj.get("tools"), list):
                data["tools"] = len(obj["tools"])
            return [("progress", data)]
        return [("progress", {"step": f"claude-code {obj.get('subtype') or 'system'}"})]

    def _assistant(self, message: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        self.model = message.get("model") or self.model
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and block.get("text"):
                events.append(("message", {"role": "assistant", "text": block["text"]}))
            elif block.get("type") == "tool_use":
                self._tools[str(block.get("id"))] = str(block.get("name"))
                data = {"phase": "call", "name": block.get("name"), "id": block.get("id")}
                events.append(("tool", {**data, "input": block.get("input")}))
        usage = message.get("usage")
        msg_id = str(message.get("id") or "")
        if isinstance(usage, dict):
            if msg_id not in self._seen:
                self.steps += 1
            tokens_in = sum(
                _int(usage.get(k))
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
            tokens_out = _int(usage.get("output_tokens"))
            done_in, done_out = self._seen.get(msg_id, (0, 0))
            self._seen[msg_id] = (max(done_in, tokens_in), max(done_out, tokens_out))
            delta = self._usage.delta(max(tokens_in - done_in, 0), max(tokens_out - done_out, 0))
            if delta is not None:
                events.append(delta)
        return events

    def _user(self, message: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            output = block.get("content")
            if isinstance(output, list):
                output = "\n".join(str(b.get("text", "")) for b in output if isinstance(b, dict))
            call_id = str(block.get("tool_use_id"))
            data = {"phase": "result", "name": self._tools.get(call_id, "tool"), "id": call_id}
            events.append(("tool", {**data, "ok": not block.get("is_error"), "output": _clip(output or "")}))
        return events

    def _result(self, obj: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        raw = obj.get("usage")
        usage: dict[str, Any] = raw if isinstance(raw, dict) else {}
        total_in = sum(
            _int(usage.get(k))
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        total_out = _int(usage.get("output_tokens"))
        cost = obj.get("total_cost_usd")
        total_cost = float(cost) if isinstance(cost, int | float) else self._usage.cost
        # Correct the running count to the CLI's own totals (it may have missed calls).
        delta = self._usage.delta(
            max(total_in - self._usage.tokens_in, 0) if usage else 0,
            max(total_out - self._usage.tokens_out, 0) if usage else 0,
            total_cost - self._usage.cost,
        )
        if delta is not None:
            events.append(delta)
        if isinstance(obj.get("num_turns"), int):
            self.steps = obj["num_turns"]
        failed = bool(obj.get("is_error")) or str(obj.get("subtype", "")).startswith("error")
        text = obj.get("result") if isinstance(obj.get("result"), str) else None
        if failed:
            events.append(("error", {"message": f"claude-code: {obj.get('subtype')}: {text or ''}".strip()}))
        data: dict[str, Any] = {"summary": text or None, "subtype": obj.get("subtype"), "steps": self.steps}
        data.update({k: obj[k] for k in ("duration_ms", "session_id") if k in obj})
        events.append(("result", data))
        return events


class CodexTranslator:
    """Codex CLI's ``exec --json`` output as run events."""

    def __init__(self, price: Price | None = None, *, metered: bool = False) -> None:
        self.model: str | None = None
        self.steps = 0
        self._usage = _Usage(price, enabled=not metered)
        self._started: set[str] = set()
        self._last_message: str | None = None
        self.failed = False

    def feed(self, line: str) -> list[Event]:
        """See :class:`Translator`."""
        obj = _parse(line)
        if obj is None:
            return [("log", {"text": line})] if line.strip() else []
        kind = str(obj.get("type"))
        if kind == "thread.started":
            return [("progress", {"step": "agent", "agent": "codex", "thread_id": obj.get("thread_id")})]
        if kind in ("item.started", "item.updated", "item.completed"):
            item = obj.get("item")
            return self._item(kind, item) if isinstance(item, dict) else []
        if kind == "turn.completed":
            raw = obj.get("usage")
            usage: dict[str, Any] = raw if isinstance(raw, dict) else {}
            delta = self._usage.delta(_int(usage.get("input_tokens")), _int(usage.get("output_tokens")))
            return [delta] if delta is not None else []
        if kind == "error":  # a retry notice; a failure ends in turn.failed
            return [("log", {"text": f"codex: {obj.get('message') or kind}"})]
        if kind == "turn.failed":
            self.failed = True
            raw_error = obj.get("error")
            error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else obj
            return [("error", {"message": f"codex: {error.get('message') or kind}"})]
        return []

    def finish(self) -> list[Event]:
        """The last agent message is Codex's summary of the run."""
        if self._last_message is None:
            return []
        return [("result", {"summary": self._last_message, "steps": self.steps})]

    def _item(self, kind: str, item: dict[str, Any]) -> list[Event]:
        item_type, item_id = item.get("type"), str(item.get("id"))
        done = kind == "item.completed"
        if done:
            self.steps += 1
        if item_type == "agent_message":
            if not done or not item.get("text"):
                return []
            self._last_message = str(item["text"])
            return [("message", {"role": "assistant", "text": self._last_message})]
        if item_type == "reasoning":
            return [("log", {"text": f"reasoning: {item.get('text', '')}"})] if done else []
        if item_type == "todo_list":
            return [("progress", {"step": "plan", "items": item.get("items") or []})]
        if item_type == "error":  # a warning (the run goes on); failures are turn.failed
            return [("log", {"text": f"codex warning: {item.get('message', '')}"})]
        name, call_input = self._call(item)
        if name is None:
            return []
        if not done:
            if kind == "item.started" and item_id not in self._started:
                self._started.add(item_id)
                return [("tool", {"phase": "call", "name": name, "id": item_id, "input": call_input})]
            return []
        data: dict[str, Any] = {"phase": "result", "name": name, "id": item_id}
        if item_id not in self._started:
            data["input"] = call_input  # reported only once complete (file changes)
        status = item.get("status")
        if item_type == "command_execution":
            data["exit_code"] = item.get("exit_code")
            data["output"] = _clip(item.get("aggregated_output") or "")
            data["ok"] = status == "completed" and item.get("exit_code") == 0
        elif item_type == "mcp_tool_call":
            data["ok"] = status == "completed"
            result = item.get("error") or item.get("result")
            data["output"] = _clip(result if result is not None else "")
        else:
            data["ok"] = status in (None, "completed")
        return [("tool", data)]

    @staticmethod
    def _call(item: dict[str, Any]) -> tuple[str | None, Any]:
        item_type = item.get("type")
        if item_type == "command_execution":
            return "bash", {"command": item.get("command")}
        if item_type == "file_change":
            return "apply_patch", {"changes": item.get("changes") or []}
        if item_type == "mcp_tool_call":
            return f"{item.get('server')}.{item.get('tool')}", item.get("arguments")
        if item_type == "web_search":
            return "web_search", {"query": item.get("query")}
        return None, None
