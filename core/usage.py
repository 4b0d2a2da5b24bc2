"""Token usage: how run events report it, and how it adds up (one parser for every reader).

Agents report usage on their events as ``data.usage`` — ``{"input_tokens", "output_tokens",
"cost_usd"}`` (``tokens_in`` / ``tokens_out`` are accepted too). The event pump adds it up to
enforce budgets while a run goes; the task snapshot adds it up to show it live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _number(usage: Mapping[str, Any], *names: str) -> float:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


@dataclass(frozen=True)
class TokenUsage:
    """Tokens in and out, and their cost in US dollars."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    @classmethod
    def of_event(cls, data: Mapping[str, Any]) -> TokenUsage | None:
        """The usage an event's ``data`` reports, or ``None`` when it reports none."""
        usage = data.get("usage")
        if not isinstance(usage, Mapping):
            return None
        return cls(
            int(_number(usage, "input_tokens", "tokens_in")),
            int(_number(usage, "output_tokens", "tokens_out")),
            _number(usage, "cost_usd"),
        )

    def wire(self) -> dict[str, Any]:
        """The ``data.usage`` object of a run event."""
        return {"input_tokens": self.tokens_in, "output_tokens": self.tokens_out, "cost_usd": self.cost_usd}

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.tokens_in + other.tokens_in,
            self.tokens_out + other.tokens_out,
            self.cost_usd + other.cost_usd,
        )

    @property
    def tokens(self) -> int:
        """Tokens in and out together (what ``max_tokens`` budgets)."""
        return self.tokens_in + self.tokens_out

    def __bool__(self) -> bool:
        return bool(self.tokens_in or self.tokens_out or self.cost_usd)
