"""The model seam of the built-in agent: one protocol, its errors, and the retry policy.

Providers (:mod:`jobs.agent.anthropic_llm`, :mod:`jobs.agent.openai_llm`) turn SDK failures into
two errors with a clear meaning for the loop:

* :class:`ModelRetryable` — 429, 529 overloaded, 5xx, a dropped connection or a timeout: wait
  (``retry-after`` when the API sent one, else exponential backoff) and try again;
* :class:`ModelFatal` — a bad or missing key, an unknown model, a refused request: retrying cannot
  help, so the run fails at once and says why.

The SDKs' own retries are switched off (``max_retries=0``) so that every wait is decided here,
bounded by the run's deadline, and reported as an event.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import HandoffError
from jobs.agent.conversation import ModelRequest, Turn

TextSink = Callable[[str], None]


class ModelError(HandoffError):
    """A model API call failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ModelRetryable(ModelError):
    """A transient failure (rate limit, overload, server error, network): worth retrying."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class ModelFatal(ModelError):
    """A failure retrying cannot fix (authentication, unknown model, invalid request)."""


class LLM(Protocol):
    """A chat model with tools."""

    provider: str

    async def complete(self, request: ModelRequest, on_text: TextSink) -> Turn:
        """Run one model call; ``on_text`` receives text deltas as they stream in."""
        ...

    async def close(self) -> None:
        """Release the HTTP client."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between retries of a model call."""

    attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_delay_s)
        backoff = self.base_delay_s * 2 ** (attempt - 1)
        return float(min(backoff * (0.75 + random.random() / 2), self.max_delay_s))


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), if present."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value.strip() else None
        return max(parsed.timestamp() - time.time(), 0.0) if parsed is not None else None


def classify_status(status: int, message: str, headers: Mapping[str, str] | None, body: Any) -> ModelError:
    """The error for an HTTP status (``status`` 200 is an error event inside a stream)."""
    kind = _error_type(body)
    if status == 200:  # an error event mid-stream: the body names what happened
        transient = kind in {"overloaded_error", "api_error", "rate_limit_error", "server_error"}
        if transient:
            return ModelRetryable(f"model API error mid-stream ({kind}): {message}", status)
        return ModelFatal(f"model API error ({kind or 'unknown'}): {message}", status)
    if status in (401, 403):
        return ModelFatal(f"the model API refused the key (HTTP {status}): {message}", status)
    if status == 404:
        return ModelFatal(f"unknown model or endpoint (HTTP 404): {message}", status)
    if status in (408, 409, 429) or status >= 500:
        return ModelRetryable(f"model API HTTP {status}: {message}", status, retry_after(headers))
    return ModelFatal(f"the model API rejected the request (HTTP {status}): {message}", status)


def _error_type(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("type") or error.get("code") or "")
        return str(body.get("type") or "")
    return ""


def error_message(body: Any, fallback: str) -> str:
    """The API's own message from an error body, else ``fallback``."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("message"):
            return str(body["message"])
    return fallback


async def complete_with_retries(
    llm: LLM,
    request: ModelRequest,
    on_text: TextSink,
    *,
    policy: RetryPolicy,
    time_left: Callable[[], float],
    on_retry: Callable[[int, float, ModelRetryable], None],
) -> Turn:
    """``llm.complete`` with retries of transient failures, never waiting past ``time_left()``."""
    attempt = 0
    while True:
        try:
            return await llm.complete(request, on_text)
        except ModelRetryable as exc:
            attempt += 1
            delay = policy.delay(attempt, exc.retry_after)
            if attempt >= policy.attempts or delay >= time_left():
                # Still transient: the caller may retry the whole run later.
                raise ModelRetryable(f"{exc} (gave up after {attempt} attempts)", exc.status) from exc
            on_retry(attempt, delay, exc)
            await asyncio.sleep(delay)
