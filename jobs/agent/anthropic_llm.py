"""The Anthropic Messages API (with tools, streamed or not) through the ``anthropic`` SDK."""

from __future__ import annotations

import json
from typing import Any

import anthropic

from jobs.agent.conversation import Message, ModelRequest, ToolCall, ToolSpec, Turn
from jobs.agent.llm import ModelFatal, ModelRetryable, TextSink, classify_status, error_message

DEFAULT_BASE_URL = "https://api.anthropic.com"


class AnthropicLLM:
    """:class:`jobs.agent.llm.LLM` on the Anthropic Messages API."""

    provider = "anthropic"

    def __init__(
        self, api_key: str, base_url: str | None = None, *, stream: bool = True, timeout_s: float = 600.0
    ) -> None:
        """Build the SDK client (no I/O); the key is explicit so no environment or file is read."""
        self.stream = stream
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url or DEFAULT_BASE_URL, max_retries=0, timeout=timeout_s
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    async def complete(self, request: ModelRequest, on_text: TextSink) -> Turn:
        """One Messages API call; see :class:`jobs.agent.llm.LLM`."""
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "system": request.system,
            "messages": to_wire(request.messages),
            "tools": [tool_wire(t) for t in request.tools],
        }
        try:
            if not self.stream:
                message = await self._client.messages.create(**params, stream=False)
                return _from_message(message, on_text)
            stream = await self._client.messages.create(**params, stream=True)
            return await _from_stream(stream, on_text)
        except anthropic.APIStatusError as exc:
            message_text = error_message(exc.body, str(exc))
            raise classify_status(exc.status_code, message_text, exc.response.headers, exc.body) from exc
        except anthropic.APIConnectionError as exc:
            raise ModelRetryable(f"cannot reach the Anthropic API: {exc}") from exc
        except anthropic.AnthropicError as exc:
            raise ModelFatal(f"Anthropic SDK error: {exc}") from exc


def tool_wire(tool: ToolSpec) -> dict[str, Any]:
    """A tool in the Messages API form."""
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}


def to_wire(messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral messages as Messages API messages (tool results travel in a user message)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "assistant":
            content: list[dict[str, Any]] = []
            if message.get("text"):
                content.append({"type": "text", "text": message["text"]})
            for call in message.get("tool_calls", []):
                content.append(
                    {"type": "tool_use", "id": call["id"], "name": call["name"], "input": _input(call)}
                )
            out.append({"role": "assistant", "content": content or [{"type": "text", "text": "(empty)"}]})
            continue
        if role == "tool":
            content = [
                {
                    "type": "tool_result",
                    "tool_use_id": r["id"],
                    "content": r.get("content") or "(no output)",
                    "is_error": bool(r.get("is_error")),
                }
                for r in message.get("results", [])
            ]
        else:
            content = [{"type": "text", "text": message.get("text") or "(empty)"}]
        if out and out[-1]["role"] == "user":
            out[-1]["content"].extend(content)  # roles must alternate: merge into one user turn
        else:
            out.append({"role": "user", "content": content})
    return out


def _input(call: dict[str, Any]) -> dict[str, Any]:
    # The API wants an object back even when the model produced malformed JSON the first time.
    try:
        value = json.loads(call.get("arguments") or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _input_tokens(usage: Any) -> int:
    total = 0
    for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = getattr(usage, name, None)
        if isinstance(value, int):
            total += value
    return total


def _from_message(message: Any, on_text: TextSink) -> Turn:
    turn = Turn(stop_reason=message.stop_reason, model=message.model)
    for block in message.content or []:
        if block.type == "text":
            turn.text += block.text
        elif block.type == "tool_use":
            turn.tool_calls.append(ToolCall(block.id, block.name, json.dumps(block.input)))
    if turn.text:
        on_text(turn.text)
    turn.input_tokens = _input_tokens(message.usage)
    turn.output_tokens = int(getattr(message.usage, "output_tokens", 0) or 0)
    return turn


async def _from_stream(stream: Any, on_text: TextSink) -> Turn:
    turn = Turn()
    # index -> [id, name, partial JSON, initial input]
    tools: dict[int, list[Any]] = {}
    async for event in stream:
        kind = event.type
        if kind == "message_start":
            turn.model = event.message.model
            turn.input_tokens = _input_tokens(event.message.usage)
            turn.output_tokens = int(getattr(event.message.usage, "output_tokens", 0) or 0)
        elif kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                tools[event.index] = [block.id, block.name, "", getattr(block, "input", None) or {}]
            elif block.type == "text" and block.text:
                turn.text += block.text
                on_text(block.text)
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                turn.text += delta.text
                on_text(delta.text)
            elif delta.type == "input_json_delta" and event.index in tools:
                tools[event.index][2] += delta.partial_json
        elif kind == "message_delta":
            turn.stop_reason = event.delta.stop_reason or turn.stop_reason
            usage = event.usage
            # Cumulative counts: the last message_delta has the totals.
            if getattr(usage, "output_tokens", None) is not None:
                turn.output_tokens = int(usage.output_tokens)
            if getattr(usage, "input_tokens", None):
                turn.input_tokens = _input_tokens(usage)
    for index in sorted(tools):
        call_id, name, partial, initial = tools[index]
        turn.tool_calls.append(ToolCall(call_id, name, partial if partial else json.dumps(initial)))
    return turn
