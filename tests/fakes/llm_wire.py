"""The Anthropic Messages and OpenAI Chat Completions wire formats of the fake LLM
(:mod:`tests.fakes.llm`): the scripted steps, the streamed events with the real APIs' order and
shapes, the error bodies, and the checks the real APIs make on a conversation."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response


@dataclass(frozen=True)
class Call:
    """A tool call in a scripted reply; ``raw`` overrides the JSON (to send malformed arguments)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None

    @property
    def arguments(self) -> str:
        return self.raw if self.raw is not None else json.dumps(self.args)


@dataclass(frozen=True)
class Reply:
    """One scripted model response."""

    text: str = ""
    calls: tuple[Call, ...] = ()
    usage: tuple[int, int] = (1000, 100)
    delay_s: float = 0.0
    sticky: bool = False  # answer every later request with this reply too
    pieces: int = 3  # a streamed text or argument string arrives in this many deltas
    piece_delay_s: float = 0.0  # pause after each delta (a slow, long answer)


@dataclass(frozen=True)
class Fault:
    """One scripted HTTP failure."""

    status: int
    kind: str = ""
    message: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def pieces(text: str, n: int = 3) -> list[str]:
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


async def anthropic_events(
    msg_id: str, model: str, blocks: list[dict[str, Any]], stop: str, step: Reply
) -> AsyncIterator[str]:
    usage = step.usage
    start: dict[str, Any] = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": 1},
    }
    yield sse("message_start", {"type": "message_start", "message": start})
    yield sse("ping", {"type": "ping"})
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            yield sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            for piece in pieces(block["text"], step.pieces):
                delta = {"type": "text_delta", "text": piece}
                yield sse(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                )
                await asyncio.sleep(step.piece_delay_s)
        else:
            head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            yield sse(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": head}
            )
            for piece in pieces(block["call"].arguments, step.pieces):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield sse(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                )
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": usage[1]},
    }
    yield sse("message_delta", end)
    yield sse("message_stop", {"type": "message_stop"})


async def openai_chunks(
    model: str,
    created: int,
    step: Reply,
    calls: list[tuple[str, Call]],
    finish: str,
    usage: dict[str, int] | None,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
        }
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    if step.text:
        for piece in pieces(step.text, step.pieces):
            yield chunk({"content": piece})
            await asyncio.sleep(step.piece_delay_s)
    for index, (call_id, call) in enumerate(calls):
        head = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [head]})
        for piece in pieces(call.arguments, step.pieces):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, finish)
    if usage is not None:
        tail = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        yield f"data: {json.dumps(tail)}\n\n"
    yield "data: [DONE]\n\n"


def anthropic_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers={"x-should-retry": "false", **(headers or {})})


def openai_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": code, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers={"x-should-retry": "false", **(headers or {})})


def check_anthropic(body: dict[str, Any]) -> str | None:
    """What the real API would refuse: alternation, and tool results for every tool use."""
    messages = body.get("messages") or []
    if not messages or messages[0].get("role") != "user":
        return "messages: first message must use the user role"
    for prev, cur in itertools.pairwise(messages):
        if prev["role"] == cur["role"]:
            return "messages: roles must alternate between user and assistant"
        if prev["role"] == "assistant":
            uses = {b["id"] for b in prev["content"] if b.get("type") == "tool_use"}
            content = cur["content"] if isinstance(cur["content"], list) else []
            answered = {b["tool_use_id"] for b in content if b.get("type") == "tool_result"}
            if uses - answered:
                return f"tool_use ids were found without tool_result blocks: {sorted(uses - answered)}"
    for m in messages:
        if isinstance(m["content"], list) and not m["content"]:
            return "messages: content must not be empty"
    return None


def check_openai(body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    pending: set[str] = set()
    for m in messages:
        if m["role"] == "tool":
            pending.discard(m.get("tool_call_id"))
            continue
        if pending:
            return f"tool_calls without responding tool messages: {sorted(pending)}"
        if m["role"] == "assistant":
            pending = {c["id"] for c in m.get("tool_calls") or []}
    return None
