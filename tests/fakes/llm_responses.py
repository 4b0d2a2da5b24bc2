"""The OpenAI Responses API wire format for :class:`tests.fakes.llm.FakeLLM` (what Codex speaks).

``POST /v1/responses`` answers one scripted reply as a ``response`` object, or streamed as the real
API's server-sent events: ``response.created``, ``response.in_progress``, then per output item
``response.output_item.added`` … (``response.content_part.added``, ``response.output_text.delta``
in pieces, ``response.output_text.done``, ``response.content_part.done`` for a message;
``response.function_call_arguments.delta`` in pieces and ``.done`` for a function call) …
``response.output_item.done``, and ``response.completed`` carrying ``usage`` (``input_tokens``,
``output_tokens`` and their details). Every event has a ``sequence_number``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any


def usage_body(usage: tuple[int, int]) -> dict[str, Any]:
    """A Responses ``usage`` object."""
    return {
        "input_tokens": usage[0],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage[1],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": sum(usage),
    }


def output_items(
    text: str, calls: list[tuple[str, str, str]], next_id: Callable[[], int]
) -> list[dict[str, Any]]:
    """The completed output items: a message (if any text), then one ``function_call`` per call
    given as ``(call_id, name, arguments)``."""
    items: list[dict[str, Any]] = []
    if text:
        items.append(
            {
                "id": f"msg_{next_id():04d}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for call_id, name, arguments in calls:
        items.append(
            {
                "id": f"fc_{next_id():04d}",
                "type": "function_call",
                "status": "completed",
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
            }
        )
    return items


def response_body(
    resp_id: str, model: str, items: list[dict[str, Any]], usage: tuple[int, int] | None, status: str
) -> dict[str, Any]:
    """A ``response`` object (the whole answer, or its state inside a streamed event)."""
    return {
        "id": resp_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": items,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "usage": usage_body(usage) if usage is not None else None,
    }


async def stream_events(
    resp_id: str,
    model: str,
    items: list[dict[str, Any]],
    usage: tuple[int, int],
    pieces: Callable[[str], list[str]],
    piece_delay_s: float = 0.0,
) -> AsyncIterator[str]:
    """The streamed events of one response."""
    seq = itertools.count()

    def sse(kind: str, **data: Any) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': next(seq), **data})}\n\n"

    yield sse("response.created", response=response_body(resp_id, model, [], None, "in_progress"))
    yield sse("response.in_progress", response=response_body(resp_id, model, [], None, "in_progress"))
    for index, item in enumerate(items):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            yield sse(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            empty = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            yield sse("response.content_part.added", **where, part=empty)
            for piece in pieces(text):
                yield sse("response.output_text.delta", **where, delta=piece, logprobs=[])
                await asyncio.sleep(piece_delay_s)
            yield sse("response.output_text.done", **where, text=text, logprobs=[])
            yield sse("response.content_part.done", **where, part={**empty, "text": text})
        else:
            yield sse(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in pieces(item["arguments"]):
                yield sse(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
                await asyncio.sleep(piece_delay_s)
            yield sse(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        yield sse("response.output_item.done", output_index=index, item=item)
    yield sse("response.completed", response=response_body(resp_id, model, items, usage, "completed"))


def check(body: dict[str, Any]) -> str | None:
    """What the real API refuses: a function call whose output is missing from the input."""
    items = body.get("input")
    if isinstance(items, str):
        return None
    if not isinstance(items, list) or not items:
        return "input: must be a non-empty string or list"
    calls = {i.get("call_id") for i in items if isinstance(i, dict) and i.get("type") == "function_call"}
    outputs = {
        i.get("call_id") for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"
    }
    if calls - outputs:
        return f"No tool output found for function call {sorted(c for c in calls - outputs if c)}"
    return None


def user_texts(body: dict[str, Any]) -> list[str]:
    """The user's texts in a Responses request's input."""
    items = body.get("input")
    if isinstance(items, str):
        return [items]
    texts: list[str] = []
    for item in items or []:
        if isinstance(item, dict) and item.get("type") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [c.get("text", "") for c in content if isinstance(c, dict)]
    return texts


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """``function_call_output`` items as ``{id, content, is_error}``, oldest first."""
    out: list[dict[str, Any]] = []
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else json.dumps(output)
            out.append({"id": item.get("call_id"), "content": text, "is_error": None})
    return out


def last_call_ids(body: dict[str, Any]) -> set[str]:
    """The call ids of the function calls after the last message of the input."""
    ids: set[str] = set()
    for item in reversed(body.get("input") or []):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            ids.add(str(item.get("call_id")))
        elif item.get("type") == "message" and ids:
            break
    return ids
