"""OpenAI Chat Completions (tool calls, streamed or not) through the ``openai`` SDK.

With ``OPENAI_BASE_URL`` the same code serves OpenAI-compatible servers (vLLM, Ollama, llama.cpp).
Those take ``max_tokens``; OpenAI's own newer models take only ``max_completion_tokens``, so the
name depends on whether the base URL is OpenAI's.
"""

from __future__ import annotations

from typing import Any

import openai

from jobs.agent.conversation import Message, ModelRequest, ToolCall, ToolSpec, Turn
from jobs.agent.llm import ModelFatal, ModelRetryable, TextSink, classify_status, error_message

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAILLM:
    """:class:`jobs.agent.llm.LLM` on the Chat Completions API."""

    provider = "openai"

    def __init__(
        self, api_key: str, base_url: str | None = None, *, stream: bool = True, timeout_s: float = 600.0
    ) -> None:
        """Build the SDK client (no I/O)."""
        self.stream = stream
        url = base_url or DEFAULT_BASE_URL
        self._token_param = "max_completion_tokens" if "api.openai.com" in url else "max_tokens"
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=url, max_retries=0, timeout=timeout_s)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    async def complete(self, request: ModelRequest, on_text: TextSink) -> Turn:
        """One Chat Completions call; see :class:`jobs.agent.llm.LLM`."""
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_wire(request.system, request.messages),
            "tools": [tool_wire(t) for t in request.tools],
            self._token_param: request.max_tokens,
        }
        try:
            if not self.stream:
                response = await self._client.chat.completions.create(**params, stream=False)
                return _from_response(response, on_text)
            stream = await self._client.chat.completions.create(
                **params, stream=True, stream_options={"include_usage": True}
            )
            return await _from_stream(stream, on_text)
        except openai.APIStatusError as exc:
            message_text = error_message(exc.body, str(exc))
            raise classify_status(exc.status_code, message_text, exc.response.headers, exc.body) from exc
        except openai.APIConnectionError as exc:
            raise ModelRetryable(f"cannot reach the OpenAI API: {exc}") from exc
        except openai.OpenAIError as exc:
            raise ModelFatal(f"OpenAI SDK error: {exc}") from exc


def tool_wire(tool: ToolSpec) -> dict[str, Any]:
    """A tool in the Chat Completions form."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def to_wire(system: str, messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral messages as Chat Completions messages (one ``tool`` message per result)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for message in messages:
        role = message["role"]
        if role == "assistant":
            wire: dict[str, Any] = {"role": "assistant", "content": message.get("text") or None}
            calls = message.get("tool_calls") or []
            if calls:
                wire["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c.get("arguments") or "{}"},
                    }
                    for c in calls
                ]
            out.append(wire)
        elif role == "tool":
            for r in message.get("results", []):
                content = r.get("content") or "(no output)"
                if r.get("is_error"):
                    content = f"ERROR: {content}"  # the format has no error flag
                out.append({"role": "tool", "tool_call_id": r["id"], "content": content})
        else:
            out.append({"role": "user", "content": message.get("text") or ""})
    return out


def _from_response(response: Any, on_text: TextSink) -> Turn:
    turn = Turn(model=getattr(response, "model", None))
    if response.choices:
        choice = response.choices[0]
        turn.stop_reason = choice.finish_reason
        turn.text = choice.message.content or ""
        for n, call in enumerate(choice.message.tool_calls or []):
            function = call.function
            turn.tool_calls.append(ToolCall(call.id or f"call_{n}", function.name, function.arguments or ""))
    if turn.text:
        on_text(turn.text)
    if response.usage is not None:
        turn.input_tokens = int(response.usage.prompt_tokens or 0)
        turn.output_tokens = int(response.usage.completion_tokens or 0)
    return turn


async def _from_stream(stream: Any, on_text: TextSink) -> Turn:
    turn = Turn()
    calls: dict[int, dict[str, str]] = {}
    async for chunk in stream:
        turn.model = getattr(chunk, "model", None) or turn.model
        if getattr(chunk, "usage", None) is not None:
            turn.input_tokens = int(chunk.usage.prompt_tokens or 0)
            turn.output_tokens = int(chunk.usage.completion_tokens or 0)
        for choice in chunk.choices or []:
            delta = choice.delta
            if delta is not None and delta.content:
                turn.text += delta.content
                on_text(delta.content)
            for tc in (delta.tool_calls if delta is not None else None) or []:
                index = tc.index if tc.index is not None else len(calls)
                entry = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    entry["id"] = tc.id
                function = tc.function
                if function is not None:
                    # Some compatible servers repeat the name in every chunk: take it once.
                    if function.name and function.name != entry["name"]:
                        entry["name"] += function.name
                    entry["arguments"] += function.arguments or ""
            if choice.finish_reason:
                turn.stop_reason = choice.finish_reason
    for index in sorted(calls):
        entry = calls[index]
        turn.tool_calls.append(ToolCall(entry["id"] or f"call_{index}", entry["name"], entry["arguments"]))
    return turn
