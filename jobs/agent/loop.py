"""The built-in agent's loop: ask the model, run the tools it calls, repeat until it is done.

One *step* is one model call. After each, the usage is reported as an event (``data.usage``, which
the event pump adds up so the execution's token and cost budgets apply as they do to any agent),
then the limits are checked: steps, input and output tokens, the pump's budgets, cancellation and
the deadline. The loop ends when the model calls ``finish`` (or stops calling tools), calls
``ask``, a limit is reached, or the model API fails for good. It never raises for those: the
:class:`LoopResult` says how it ended.

A malformed tool call (unknown tool, arguments that are not JSON or miss a field) gets an error
result back, so the model can correct itself; it is not a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from core.config import Price
from core.errors import SandboxError, SandboxUnavailable
from core.usage import TokenUsage
from jobs.agent.conversation import Message, ModelRequest, ToolCall, ToolResult, ToolSpec, Turn, tool_message
from jobs.agent.ending import Status
from jobs.agent.llm import LLM, ModelFatal, ModelRetryable, RetryPolicy, complete_with_retries
from jobs.agent.tools import ASK, FINISH, REPORT, SPECS, ToolBox, check_arguments

Emit = Callable[[str, dict[str, Any]], None]
T = TypeVar("T")
_EVENT_CHARS = 4000  # of tool input and output, in events (the model gets more)


@dataclass(frozen=True)
class LoopLimits:
    """What one run may use."""

    max_steps: int
    max_output_tokens: int  # per model call
    max_input_tokens_total: int | None = None
    max_output_tokens_total: int | None = None


@dataclass
class LoopResult:
    """How the loop ended."""

    status: Status
    summary: str | None = None
    reason: str | None = None
    question: str | None = None
    pending_ask_id: str | None = None
    retryable: bool = False
    last_text: str = ""
    # Review mode: what the agent reported (untrusted; core.review checks it).
    findings: Any = None


@dataclass
class AgentLoop:
    """Runs one conversation to its end; see the module docstring."""

    llm: LLM
    tools: ToolBox
    emit: Emit
    model: str
    system: str
    messages: list[Message]
    limits: LoopLimits
    cancel: asyncio.Event
    deadline: float  # time.monotonic() value
    price: Price | None = None
    budget_hit: Callable[[], str | None] = lambda: None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # The tools offered (review mode: no writes, report_findings instead of finish and ask).
    specs: list[ToolSpec] = field(default_factory=lambda: list(SPECS))
    steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    model_seen: str | None = None

    async def run(self) -> LoopResult:
        """Loop until the model finishes or asks, or a limit stops it."""
        last_text = ""
        while True:
            stop = self._limit_reached()
            if stop is not None:
                stop.last_text = last_text
                return stop
            try:
                turn = await self._race(self._call_model())
            except _Stopped as stopped:
                return self._stopped(stopped.why, last_text)
            except ModelRetryable as exc:
                return LoopResult("failed", reason=str(exc), retryable=True, last_text=last_text)
            except ModelFatal as exc:
                return LoopResult("failed", reason=str(exc), last_text=last_text)
            self.steps += 1
            self._account(turn)
            self.messages.append(turn.message())
            last_text = turn.text.strip() or last_text
            if not turn.tool_calls:
                if turn.stop_reason in ("max_tokens", "length"):
                    self.messages.append({"role": "user", "text": "(Your reply was cut off. Continue.)"})
                    continue
                # A reply without tool calls is the model's final answer.
                return LoopResult("finished", summary=turn.text.strip() or None, last_text=last_text)
            try:
                ended = await self._run_tools(turn.tool_calls)
            except _Stopped as stopped:
                return self._stopped(stopped.why, last_text)
            except (SandboxError, SandboxUnavailable) as exc:
                # The engine gone is worth another run; a container that died (memory) is not.
                retry = isinstance(exc, SandboxUnavailable)
                return LoopResult("failed", reason=f"sandbox: {exc}", retryable=retry, last_text=last_text)
            if ended is not None:
                ended.last_text = last_text
                return ended

    # -- model calls ---------------------------------------------------------------------------

    async def _call_model(self) -> Turn:
        request = ModelRequest(
            self.model, self.system, self.messages, self.specs, self.limits.max_output_tokens
        )
        coalescer = _Coalescer(self.emit, self.steps + 1)
        try:
            return await complete_with_retries(
                self.llm,
                request,
                coalescer.add,
                policy=self.retry,
                time_left=lambda: self.deadline - time.monotonic(),
                on_retry=self._on_retry,
            )
        finally:
            coalescer.flush()

    def _on_retry(self, attempt: int, delay: float, exc: ModelRetryable) -> None:
        self.emit(
            "progress",
            {"step": "model retry", "attempt": attempt, "delay_s": round(delay, 2), "reason": str(exc)},
        )

    def _account(self, turn: Turn) -> None:
        self.tokens_in += turn.input_tokens
        self.tokens_out += turn.output_tokens
        self.model_seen = turn.model or self.model_seen
        cost = self.price.cost(turn.input_tokens, turn.output_tokens) if self.price else 0.0
        usage = TokenUsage(turn.input_tokens, turn.output_tokens, cost).wire()
        # The pump adds ``usage`` up (run tokens and cost) and applies the token and cost budgets.
        self.emit("progress", {"step": "model", "n": self.steps, "model": self.model, "usage": usage})

    # -- tools ---------------------------------------------------------------------------------

    async def _run_tools(self, calls: list[ToolCall]) -> LoopResult | None:
        results: list[ToolResult] = []
        finish: str | None = None
        ask: tuple[str, str] | None = None
        report: dict[str, Any] | None = None
        for call in calls:
            try:
                args = check_arguments(call, self.specs)
            except ValueError as exc:
                message = f"invalid call of {call.name!r}: {exc}. Fix the arguments and call it again."
                self._tool_event(call, None, {"output": message, "ok": False})
                results.append(ToolResult(call.id, call.name, message, is_error=True))
                continue
            if call.name == FINISH:
                finish = str(args["summary"])
                continue
            if call.name == REPORT:
                report = args
                continue
            if call.name == ASK:
                if ask is None:
                    ask = (call.id, str(args["question"]))
                else:
                    results.append(ToolResult(call.id, ASK, "ask one question at a time", is_error=True))
                continue
            self._tool_event(call, args, None)
            run = await self._race(self.tools.run(call, args))
            outcome: dict[str, Any] = {"ok": not run.result.is_error, "exit_code": run.exit_code}
            outcome["duration_s"] = round(run.duration_s, 3)
            self._tool_event(call, None, {**outcome, "output": run.result.content[:_EVENT_CHARS]})
            results.append(run.result)
        if report is not None:
            summary = report.get("summary")
            return LoopResult(
                "finished",
                summary=summary if isinstance(summary, str) else None,
                findings=report.get("findings"),
            )
        if finish is not None and not any(r.is_error for r in results):
            return LoopResult("finished", summary=finish)
        if ask is not None:
            self.messages.append(tool_message(results))
            return LoopResult("asked", question=ask[1], pending_ask_id=ask[0])
        if finish is not None:  # a sibling call failed: let the model see it before finishing
            results.append(ToolResult(_finish_id(calls), FINISH, "not finished: a tool call failed", True))
        self.messages.append(tool_message(results))
        return None

    def _tool_event(self, call: ToolCall, args: dict[str, Any] | None, end: dict[str, Any] | None) -> None:
        data: dict[str, Any] = {"name": call.name, "id": call.id, "step": self.steps}
        if end is None:
            data["phase"] = "call"
            data["input"] = {k: _clip(v) for k, v in (args or {}).items()}
        else:
            data["phase"] = "result"
            data.update(end)
        self.emit("tool", data)

    # -- limits --------------------------------------------------------------------------------

    def _limit_reached(self) -> LoopResult | None:
        hit = self.budget_hit()
        if hit is not None:
            return LoopResult("budget", reason=hit)
        if self.cancel.is_set():
            return LoopResult("cancelled", reason="cancelled")
        if time.monotonic() >= self.deadline:
            return LoopResult("timeout")
        limits = self.limits
        if self.steps >= limits.max_steps:
            return LoopResult("budget", reason=f"{self.steps} steps used (limit {limits.max_steps})")
        if limits.max_input_tokens_total is not None and self.tokens_in > limits.max_input_tokens_total:
            return LoopResult(
                "budget", reason=f"{self.tokens_in} input tokens used (limit {limits.max_input_tokens_total})"
            )
        if limits.max_output_tokens_total is not None and self.tokens_out > limits.max_output_tokens_total:
            return LoopResult(
                "budget",
                reason=f"{self.tokens_out} output tokens used (limit {limits.max_output_tokens_total})",
            )
        return None

    def _stopped(self, why: str, last_text: str) -> LoopResult:
        hit = self.budget_hit()
        if hit is not None:
            return LoopResult("budget", reason=hit, last_text=last_text)
        status: Status = "cancelled" if why == "cancel" else "timeout"
        return LoopResult(status, reason="cancelled" if why == "cancel" else None, last_text=last_text)

    async def guard(self, work: Awaitable[T]) -> T | LoopResult:
        """``work`` (e.g. the setup commands) under the same cancellation, deadline and sandbox
        failure handling as the loop; a :class:`LoopResult` when it was stopped."""
        try:
            return await self._race(work)
        except _Stopped as stopped:
            return self._stopped(stopped.why, "")
        except (SandboxError, SandboxUnavailable) as exc:
            return LoopResult(
                "failed", reason=f"sandbox: {exc}", retryable=isinstance(exc, SandboxUnavailable)
            )

    async def _race(self, work: Awaitable[T]) -> T:
        """``work``, unless cancellation or the deadline comes first (then :class:`_Stopped`)."""
        job = asyncio.ensure_future(work)
        cancelled = asyncio.ensure_future(self.cancel.wait())
        try:
            timeout = max(self.deadline - time.monotonic(), 0.0)
            done, _ = await asyncio.wait(
                {job, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if job in done:
                return job.result()
        finally:
            cancelled.cancel()
        job.cancel()
        with contextlib.suppress(BaseException):
            await job
        raise _Stopped("cancel" if self.cancel.is_set() else "deadline")


class _Stopped(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Coalescer:
    """Streams text deltas into ``message`` events without one event per token."""

    def __init__(self, emit: Emit, step: int, max_chars: int = 2000, interval_s: float = 0.5) -> None:
        self._emit, self._step = emit, step
        self._max, self._interval = max_chars, interval_s
        self._parts: list[str] = []
        self._size = 0
        self._last = time.monotonic()

    def add(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self._max or time.monotonic() - self._last >= self._interval:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._emit("message", {"role": "assistant", "text": "".join(self._parts), "step": self._step})
        self._parts, self._size, self._last = [], 0, time.monotonic()


def _clip(value: Any) -> Any:
    return value[:_EVENT_CHARS] + "…" if isinstance(value, str) and len(value) > _EVENT_CHARS else value


def _finish_id(calls: list[ToolCall]) -> str:
    return next(c.id for c in calls if c.name == FINISH)
