"""Token metering from the provider's own responses, and the run's budget as the gateway sees it.

Three wire formats carry usage, streamed (server-sent events) or as one JSON body:

* **Anthropic Messages** — ``message_start`` carries the input tokens (plus cache creation and
  cache reads) at the start of the stream; ``message_delta`` carries the cumulative output tokens
  at its end.
* **OpenAI Chat Completions** — a final chunk with ``usage`` (``prompt_tokens``,
  ``completion_tokens``) when ``stream_options.include_usage`` is set (the gateway sets it).
* **OpenAI Responses** (Codex) — ``response.completed`` (or ``.incomplete``/``.failed``) carries
  ``response.usage`` (``input_tokens``, ``output_tokens``).

Until the provider has reported its output count, the output is estimated from the text streamed
so far (four characters a token), so that a budget can stop a long answer *while it streams*; the
provider's figure replaces the estimate as soon as it arrives. A stream cut before its final usage
keeps the estimate, marked as such.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from core.budget import Budget
from core.config import Price
from core.usage import TokenUsage

Api = Literal["anthropic", "chat", "responses"]
CHARS_PER_TOKEN = 4
_USAGE = re.compile(rb'"usage"\s*:\s*\{')  # a chat chunk that carries the usage object


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of one model call (or of a whole run), as metered by the gateway."""

    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    estimated: bool = False  # the stream ended before the provider's final count

    def event_data(self) -> dict[str, Any]:
        """The run event's ``data`` (a ``progress`` step whose ``usage`` budgets count)."""
        usage = TokenUsage(self.input_tokens, self.output_tokens, self.cost_usd).wire()
        data: dict[str, Any] = {"step": "model", "model": self.model, "metered": "gateway", "usage": usage}
        if self.estimated:
            data["estimated"] = True
        return data


class SSEScanner:
    """Splits a server-sent event stream into ``(event name, data)`` pairs as its bytes arrive.

    The bytes themselves are relayed unchanged by the gateway; this only reads along, so it works
    on whole blocks (split at blank lines) rather than line by line.
    """

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """The complete events in ``chunk`` (with what was left over from earlier chunks)."""
        buffer = self._rest + chunk if self._rest else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        blocks = buffer.split(b"\n\n")
        self._rest = blocks.pop()
        events: list[tuple[bytes, bytes]] = []
        for block in blocks:
            name = b""
            data: bytes | None = None
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    part = line[6:] if line[5:6] == b" " else line[5:]
                    data = part if data is None else data + b"\n" + part
                elif line.startswith(b"event:"):
                    name = line[6:].strip()
            if data is not None:
                events.append((name, data))
        return events


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class CallMeter:
    """The usage of one model call, read from its response (streamed or not).

    Streamed events are read cheaply: the events that carry usage are parsed; the many small
    delta events are not — the first one is, to learn the size of its JSON envelope, and each
    later one counts as its length less that envelope (escapes make this a slight overestimate,
    which only makes a budget stop a little early; the provider's count replaces it).
    """

    def __init__(self, api: Api, model: str) -> None:
        self.api = api
        self.model = model
        self.input_tokens = 0
        self.output_tokens = 0
        self.final = False  # the provider's output count has arrived
        self._chars = 0
        self._envelope: int | None = None

    @property
    def output_estimate(self) -> int:
        """Output tokens so far: the provider's count once known, else estimated from the text."""
        if self.final:
            return self.output_tokens
        return max(self.output_tokens, math.ceil(self._chars / CHARS_PER_TOKEN))

    def event(self, name: bytes, data: bytes) -> None:
        """Read one streamed event (its ``event:`` name, possibly empty, and its data)."""
        if self.api == "anthropic" and name:
            if name == b"content_block_delta":
                self._delta(data)
            elif name in (b"message_start", b"message_delta"):
                self._parsed(data)
        elif self.api == "responses" and name:
            if name.endswith(b".delta"):
                self._delta(data)
            elif name in (b"response.completed", b"response.incomplete", b"response.failed"):
                self._parsed(data)
        elif self.api == "chat" and not _USAGE.search(data) and data != b"[DONE]":
            self._delta(data)
        else:  # usage, or a stream without event names: read it whole
            self._parsed(data)

    def _delta(self, data: bytes) -> None:
        if self._envelope is not None:
            self._chars += max(0, len(data) - self._envelope)
            return
        before = self._chars
        self._parsed(data)
        self._envelope = len(data) - (self._chars - before)

    def _parsed(self, data: bytes) -> None:
        obj = _json(data)
        if obj is not None:
            {"anthropic": self._anthropic, "chat": self._chat, "responses": self._responses}[self.api](obj)

    def body(self, obj: Any) -> None:
        """Read a whole (non-streamed) response body."""
        if not isinstance(obj, dict) or not isinstance(obj.get("usage"), dict):
            return
        usage = obj["usage"]
        if self.api == "anthropic":
            self._anthropic_usage(usage)
        elif self.api == "chat":
            self._chat_usage(usage)
        else:
            self._responses_usage(usage)
        self.final = True

    # -- Anthropic Messages -------------------------------------------------------------------

    def _anthropic(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            usage = obj["message"].get("usage")
            if isinstance(usage, dict):
                self._anthropic_usage(usage)
        elif kind == "content_block_delta" and isinstance(obj.get("delta"), dict):
            delta = obj["delta"]
            for key in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(key), str):
                    self._chars += len(delta[key])
        elif kind == "message_delta" and isinstance(obj.get("usage"), dict):
            self._anthropic_usage(obj["usage"])
            self.final = True

    def _anthropic_usage(self, usage: dict[str, Any]) -> None:
        # Counts are cumulative; message_delta may repeat the input counts (or leave them out).
        tokens_in = sum(
            _int(usage.get(k))
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        self.input_tokens = max(self.input_tokens, tokens_in)
        self.output_tokens = max(self.output_tokens, _int(usage.get("output_tokens")))

    # -- OpenAI Chat Completions --------------------------------------------------------------

    def _chat(self, obj: dict[str, Any]) -> None:
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            for key in ("content", "reasoning_content", "refusal"):
                if isinstance(delta.get(key), str):
                    self._chars += len(delta[key])
            for call in delta.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    self._chars += len(function["arguments"])
        if isinstance(obj.get("usage"), dict):
            self._chat_usage(obj["usage"])
            self.final = True

    def _chat_usage(self, usage: dict[str, Any]) -> None:
        self.input_tokens = _int(usage.get("prompt_tokens"))
        self.output_tokens = _int(usage.get("completion_tokens"))

    # -- OpenAI Responses ---------------------------------------------------------------------

    def _responses(self, obj: dict[str, Any]) -> None:
        kind = str(obj.get("type") or "")
        if kind.endswith(".delta") and isinstance(obj.get("delta"), str):
            self._chars += len(obj["delta"])
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = obj.get("response")
            if isinstance(response, dict) and isinstance(response.get("usage"), dict):
                self._responses_usage(response["usage"])
                self.final = True

    def _responses_usage(self, usage: dict[str, Any]) -> None:
        self.input_tokens = _int(usage.get("input_tokens"))
        self.output_tokens = _int(usage.get("output_tokens"))


class RunMeter:
    """Everything the model calls of one run have used, and whether its budget allows more.

    Settled calls add up in :attr:`input_tokens`, :attr:`output_tokens` and :attr:`cost_usd`; a call
    still streaming counts with its provisional figures in :meth:`exceeded`, so a long answer is
    stopped while it streams rather than after.
    """

    def __init__(self, budget: Budget, price_of: Callable[[str], Price | None]) -> None:
        self.budget = budget
        self.price_of = price_of
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.calls = 0

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """The price of ``model`` for these tokens (0 when the price table does not know it)."""
        price = self.price_of(model)
        return price.cost(tokens_in, tokens_out) if price is not None else 0.0

    def exceeded(self, call: CallMeter | None = None) -> str | None:
        """Why the budget is used up (counting ``call`` in flight), or ``None``."""
        b = self.budget
        if b.max_input_tokens is b.max_output_tokens is b.max_tokens is b.max_cost_usd is None:
            return None  # checked for every streamed chunk: the common case costs nothing
        tokens_in, tokens_out, cost = self.input_tokens, self.output_tokens, self.cost_usd
        if call is not None:
            tokens_in += call.input_tokens
            tokens_out += call.output_estimate
            cost += self.cost(call.model, call.input_tokens, call.output_estimate)
        if b.max_input_tokens is not None and tokens_in > b.max_input_tokens:
            return f"{tokens_in} input tokens used (limit {b.max_input_tokens})"
        if b.max_output_tokens is not None and tokens_out > b.max_output_tokens:
            return f"{tokens_out} output tokens used (limit {b.max_output_tokens})"
        if b.max_tokens is not None and tokens_in + tokens_out > b.max_tokens:
            return f"{tokens_in + tokens_out} tokens used (limit {b.max_tokens})"
        if b.max_cost_usd is not None and cost > b.max_cost_usd:
            return f"${cost:.4f} spent (limit ${b.max_cost_usd:.2f})"
        return None

    def settle(self, call: CallMeter) -> Usage:
        """Add ``call`` to the run's totals and return its usage."""
        tokens_out = call.output_estimate
        usage = Usage(
            model=call.model,
            input_tokens=call.input_tokens,
            output_tokens=tokens_out,
            cost_usd=self.cost(call.model, call.input_tokens, tokens_out),
            estimated=not call.final,
        )
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += usage.cost_usd
        self.calls += 1
        return usage
