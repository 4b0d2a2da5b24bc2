"""The conversation of the built-in agent in a provider-neutral form.

Both providers' wire formats are produced from this one shape (see :mod:`jobs.agent.anthropic_llm`
and :mod:`jobs.agent.openai_llm`), which is also what is persisted when the agent asks a question,
so a run can resume with another model or even another provider. Every message is a plain
JSON-able dict:

* ``{"role": "user", "text": str}``
* ``{"role": "assistant", "text": str, "tool_calls": [{"id", "name", "arguments"}]}`` — the
  arguments are kept as the raw JSON text the model produced (it may be malformed);
* ``{"role": "tool", "results": [{"id", "name", "content", "is_error"}]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Message = dict[str, Any]

#: Tool results kept per message when a conversation is persisted (the rest is cut in the middle).
PERSIST_RESULT_CHARS = 20_000
#: Above this many characters in all, older tool results are cut harder (the task row stays small).
PERSIST_TOTAL_CHARS = 400_000
_OLD_RESULT_CHARS = 2_000


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, what it does, and its JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model made; ``arguments`` is the raw JSON text."""

    id: str
    name: str
    arguments: str

    def parsed(self) -> dict[str, Any]:
        """The arguments as an object; raises ``ValueError`` with the reason when malformed."""
        text = self.arguments.strip() or "{}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the arguments are not valid JSON ({exc.msg} at character {exc.pos})") from exc
        if not isinstance(value, dict):
            raise ValueError("the arguments must be a JSON object")
        return value


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call, as the model will read it."""

    id: str
    name: str
    content: str
    is_error: bool = False

    def message_part(self) -> dict[str, Any]:
        """This result in the neutral ``tool`` message."""
        return {"id": self.id, "name": self.name, "content": self.content, "is_error": self.is_error}


@dataclass
class Turn:
    """What one model call returned."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None

    def message(self) -> Message:
        """This turn as a neutral ``assistant`` message."""
        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls]
        return {"role": "assistant", "text": self.text, "tool_calls": calls}


@dataclass
class ModelRequest:
    """One model call: the instructions, the conversation so far and the tools on offer."""

    model: str
    system: str
    messages: list[Message]
    tools: list[ToolSpec]
    max_tokens: int


def user(text: str) -> Message:
    """A neutral user message."""
    return {"role": "user", "text": text}


def tool_message(results: list[ToolResult]) -> Message:
    """A neutral tool-results message."""
    return {"role": "tool", "results": [r.message_part() for r in results]}


Role = Literal["user", "assistant", "tool"]


def persistable(messages: list[Message]) -> list[Message]:
    """``messages`` with long tool results cut, small enough to store with the task.

    Each result keeps its head and tail; past :data:`PERSIST_TOTAL_CHARS` the oldest results are
    cut further, since the model needs the recent ones most.
    """
    out: list[Message] = []
    for message in messages:
        if message.get("role") == "tool":
            results = [{**r, "content": _cut(str(r.get("content", "")))} for r in message.get("results", [])]
            out.append({"role": "tool", "results": results})
        else:
            out.append(dict(message))
    total = len(json.dumps(out))
    for message in out:
        if total <= PERSIST_TOTAL_CHARS:
            break
        for result in message.get("results", []) if message["role"] == "tool" else []:
            before = len(result["content"])
            result["content"] = _cut(result["content"], _OLD_RESULT_CHARS)
            total -= before - len(result["content"])
    return out


def _cut(text: str, limit: int = PERSIST_RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"
