"""A scripted LLM on loopback speaking the Anthropic Messages, OpenAI Chat Completions and OpenAI
Responses formats.

:class:`FakeLLM` is a real HTTP server (serve ``fake.app`` with ``tests.support.env.LiveServer``):
``POST /v1/messages`` answers as the Anthropic API, ``POST /v1/chat/completions`` as OpenAI's,
each streamed (server-sent events, with the event order and shapes of the real APIs: Anthropic's
``message_start`` … ``content_block_delta`` (``text_delta``, ``input_json_delta`` in pieces) …
``message_stop``; OpenAI's ``chat.completion.chunk`` deltas, a final usage chunk and ``[DONE]``)
or as one JSON body, as the request asks. ``POST /v1/responses`` answers as OpenAI's Responses API
(what Codex speaks; :mod:`tests.fakes.llm_responses`).

It plays a script: each request takes the next :class:`Reply` (text, tool calls, usage) or
:class:`Fault` (an HTTP error with the real error body and headers: 429 with ``retry-after``,
529 overloaded, 5xx). It is strict like the real APIs: a wrong key gets 401, an unknown model 404,
and a request whose tool results do not answer the previous turn's tool calls gets 400. Every
request is recorded (:attr:`FakeLLM.requests`) so a test can assert what the agent sent: the tools
offered, the context, the tool results. The helpers read both formats the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.fakes import llm_responses as responses_api
from tests.fakes import llm_wire as wire
from tests.fakes.llm_wire import Call, Fault, Reply

__all__ = ["API_KEY", "OPENAI_KEY", "Call", "FakeLLM", "Fault", "Recorded", "Reply"]

API_KEY = "sk-ant-test-0123456789abcdefghij"
OPENAI_KEY = "sk-test-0123456789abcdefghijklmn"


@dataclass
class Recorded:
    """A request the fake received."""

    api: str  # "anthropic" | "openai" | "responses"
    body: dict[str, Any]
    headers: dict[str, str]
    at: float

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def tool_names(self) -> list[str]:
        """The names of the tools offered."""
        tools = self.body.get("tools") or []
        if self.api == "anthropic":
            return [t["name"] for t in tools]
        if self.api == "responses":
            return [t["name"] for t in tools if t.get("type") == "function"]
        return [t["function"]["name"] for t in tools]

    def system(self) -> str:
        if self.api == "responses":
            return str(self.body.get("instructions") or "")
        if self.api == "anthropic":
            system = self.body.get("system")
            return system if isinstance(system, str) else json.dumps(system)
        return "\n".join(m["content"] for m in self.body["messages"] if m["role"] == "system")

    def user_text(self) -> str:
        """Every user text in the conversation (not tool results), joined."""
        if self.api == "responses":
            return "\n".join(responses_api.user_texts(self.body))
        parts: list[str] = []
        for m in self.body["messages"]:
            if m["role"] != "user":
                continue
            content = m["content"]
            if isinstance(content, str):
                parts.append(content)
            else:
                parts += [b["text"] for b in content if b.get("type") == "text"]
        return "\n".join(parts)

    def tool_results(self) -> list[dict[str, Any]]:
        """Tool results sent back in this request, oldest first: ``{id, content, is_error}``."""
        if self.api == "responses":
            return responses_api.tool_results(self.body)
        out: list[dict[str, Any]] = []
        for m in self.body["messages"]:
            if self.api == "anthropic" and m["role"] == "user" and isinstance(m["content"], list):
                for b in m["content"]:
                    if b.get("type") == "tool_result":
                        content = b.get("content")
                        if isinstance(content, list):
                            content = "".join(c.get("text", "") for c in content)
                        out.append(
                            {"id": b["tool_use_id"], "content": content, "is_error": b.get("is_error")}
                        )
            elif self.api == "openai" and m["role"] == "tool":
                content = m["content"]
                out.append(
                    {"id": m["tool_call_id"], "content": content, "is_error": content.startswith("ERROR:")}
                )
        return out

    def last_results(self) -> list[dict[str, Any]]:
        """The tool results answering the previous assistant turn."""
        ids = _last_call_ids(self)
        return [r for r in self.tool_results() if r["id"] in ids]


def _last_call_ids(req: Recorded) -> set[str]:
    if req.api == "responses":
        return responses_api.last_call_ids(req.body)
    for m in reversed(req.body["messages"]):
        if m["role"] != "assistant":
            continue
        if req.api == "anthropic":
            return {b["id"] for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_use"}
        return {c["id"] for c in m.get("tool_calls") or []}
    return set()


class FakeLLM:
    """The scripted model server; see the module docstring."""

    def __init__(
        self,
        script: list[Reply | Fault] | None = None,
        models: tuple[str, ...] = (),
        *,
        anthropic_key: str = API_KEY,
        openai_key: str = OPENAI_KEY,
    ) -> None:
        self.anthropic_key = anthropic_key
        self.openai_key = openai_key
        self.script: list[Reply | Fault] = list(script or [])
        self.models = set(models) or {"claude-test", "gpt-test"}
        self.requests: list[Recorded] = []
        self.problems: list[str] = []  # protocol violations seen (a test should assert it is empty)
        self.streams: list[str] = []  # how each streamed answer ended: "complete" or "cut"
        self._ids = itertools.count(1)
        self._sticky: Reply | None = None
        self.app = FastAPI()
        self.app.post("/v1/messages")(self._anthropic)
        self.app.post("/v1/chat/completions")(self._openai)
        self.app.get("/v1/models")(self._models)
        self.app.post("/v1/responses")(self._responses)

    def add(self, *steps: Reply | Fault) -> None:
        """Append steps to the script."""
        self.script.extend(steps)

    def _next(self) -> Reply | Fault:
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Reply) and step.sticky:
                self._sticky = step
            return step
        if self._sticky is not None:
            return self._sticky
        return Reply(text="(script exhausted)", calls=(Call("finish", {"summary": "script exhausted"}),))

    # -- GET /v1/models (both APIs; `handoff doctor` tries each key with it) --------------------

    async def _models(self, request: Request) -> Response:
        names = sorted(self.models)
        if "anthropic-version" in request.headers:
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            if self.anthropic_key not in (request.headers.get("x-api-key"), bearer):
                return wire.anthropic_error(401, "authentication_error", "invalid x-api-key")
            data = [
                {"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"}
                for n in names
            ]
            return JSONResponse({"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]})
        if request.headers.get("authorization") != f"Bearer {OPENAI_KEY}":
            return wire.openai_error(401, "invalid_api_key", "Incorrect API key provided")
        listed: list[dict[str, Any]] = [
            {"id": n, "object": "model", "created": 1735689600, "owned_by": "fake"} for n in names
        ]
        return JSONResponse({"object": "list", "data": listed})

    # -- Anthropic ------------------------------------------------------------------------------

    async def _anthropic(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(Recorded("anthropic", body, dict(request.headers), time.monotonic()))
        # Older SDKs send x-api-key, newer ones a bearer token: the real API takes both.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.anthropic_key not in (request.headers.get("x-api-key"), bearer):
            return wire.anthropic_error(401, "authentication_error", "invalid x-api-key")
        if body.get("model") not in self.models:
            return wire.anthropic_error(404, "not_found_error", f"model: {body.get('model')}")
        problem = wire.check_anthropic(body)
        if problem:
            self.problems.append(problem)
            return wire.anthropic_error(400, "invalid_request_error", problem)
        step = self._next()
        if isinstance(step, Fault):
            kind = step.kind or {429: "rate_limit_error", 529: "overloaded_error"}.get(
                step.status, "api_error"
            )
            return wire.anthropic_error(step.status, kind, step.message, step.headers)
        await asyncio.sleep(step.delay_s)
        msg_id = f"msg_{next(self._ids):04d}"
        blocks: list[dict[str, Any]] = []
        if step.text:
            blocks.append({"type": "text", "text": step.text})
        for call in step.calls:
            blocks.append(
                {"type": "tool_use", "id": f"toolu_{next(self._ids):04d}", "name": call.name, "call": call}
            )
        stop = "tool_use" if step.calls else "end_turn"
        if not body.get("stream"):
            content = [
                {
                    "type": "tool_use",
                    "id": b["id"],
                    "name": b["name"],
                    "input": json.loads(b["call"].arguments),
                }
                if b["type"] == "tool_use"
                else b
                for b in blocks
            ]
            return JSONResponse(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {"input_tokens": step.usage[0], "output_tokens": step.usage[1]},
                }
            )
        return self._stream(wire.anthropic_events(msg_id, body["model"], blocks, stop, step))

    # -- OpenAI ---------------------------------------------------------------------------------

    async def _openai(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(Recorded("openai", body, dict(request.headers), time.monotonic()))
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return wire.openai_error(401, "invalid_api_key", "Incorrect API key provided")
        if body.get("model") not in self.models:
            return wire.openai_error(
                404, "model_not_found", f"The model `{body.get('model')}` does not exist"
            )
        problem = wire.check_openai(body)
        if problem:
            self.problems.append(problem)
            return wire.openai_error(400, "invalid_request_error", problem)
        step = self._next()
        if isinstance(step, Fault):
            return wire.openai_error(step.status, step.kind or "server_error", step.message, step.headers)
        await asyncio.sleep(step.delay_s)
        calls = [(f"call_{next(self._ids):04d}", c) for c in step.calls]
        finish = "tool_calls" if calls else "stop"
        created = int(time.time())
        usage = {
            "prompt_tokens": step.usage[0],
            "completion_tokens": step.usage[1],
            "total_tokens": sum(step.usage),
        }
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": step.text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": i, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for i, c in calls
                ]
            return JSONResponse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return self._stream(
            wire.openai_chunks(body["model"], created, step, calls, finish, usage if include_usage else None)
        )

    # -- OpenAI Responses -----------------------------------------------------------------------

    async def _responses(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(Recorded("responses", body, dict(request.headers), time.monotonic()))
        if request.headers.get("authorization") != f"Bearer {self.openai_key}":
            return wire.openai_error(401, "invalid_api_key", "Incorrect API key provided")
        if body.get("model") not in self.models:
            return wire.openai_error(
                404, "model_not_found", f"The model `{body.get('model')}` does not exist"
            )
        problem = responses_api.check(body)
        if problem:
            self.problems.append(problem)
            return wire.openai_error(400, "invalid_request_error", problem)
        step = self._next()
        if isinstance(step, Fault):
            return wire.openai_error(step.status, step.kind or "server_error", step.message, step.headers)
        await asyncio.sleep(step.delay_s)
        calls = [(f"call_{next(self._ids):04d}", c.name, c.arguments) for c in step.calls]
        items = responses_api.output_items(step.text, calls, lambda: next(self._ids))
        resp_id = f"resp_{next(self._ids):04d}"
        if not body.get("stream"):
            return JSONResponse(
                responses_api.response_body(resp_id, body["model"], items, step.usage, "completed")
            )
        return self._stream(
            responses_api.stream_events(
                resp_id,
                body["model"],
                items,
                step.usage,
                lambda t: wire.pieces(t, step.pieces),
                step.piece_delay_s,
            )
        )

    def _stream(self, events: AsyncIterator[str]) -> StreamingResponse:
        """Stream ``events``, recording whether the client took all of them (:attr:`streams`)."""

        async def tracked() -> AsyncIterator[str]:
            ended = "cut"
            try:
                async for event in events:
                    yield event
                ended = "complete"
            finally:
                self.streams.append(ended)

        return StreamingResponse(tracked(), media_type="text/event-stream")
