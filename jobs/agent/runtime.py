"""The built-in agent for one run: pick the model, prepare the context, run the loop, report.

The loop runs here, in the worker (which holds the API key); every tool runs in the run's sandbox
container. :func:`build_llm` comes first so that a missing key fails the run before a container
starts. When the agent asks a question, the conversation is returned for the task to keep
(:attr:`core.links.TaskLinks.conversation`); the requester's answer arrives as a follow-up, and the next run
resumes the same conversation with the answer as the result of the ``ask`` call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.budget import Budget
from core.config import HandoffConfig, Profile
from core.links import AutomationLinks, LinkChanges, TaskLinks
from core.models import Run, Task
from core.ports import Sandbox, SandboxHandle
from core.settings import Settings
from jobs.agent.anthropic_llm import AnthropicLLM
from jobs.agent.conversation import Message, ToolResult, persistable, tool_message, user
from jobs.agent.llm import LLM, ModelFatal, RetryPolicy
from jobs.agent.loop import AgentLoop, Emit, LoopLimits, LoopResult
from jobs.agent.openai_llm import OpenAILLM
from jobs.agent.prompt import (
    REVIEW_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    answer_message,
    read_repo,
    run_setup,
    task_message,
)
from jobs.agent.tools import ASK, REVIEW_SPECS, SPECS, ToolBox

NO_ANSWER = (
    "No answer was given (the task was retried). Proceed with your best judgement and say so in your summary."
)


@dataclass
class AgentRun:
    """How the built-in agent's run ended, for the execution to turn into an outcome."""

    result: LoopResult
    model: str
    steps: int = 0
    summary: str | None = None
    # The conversation to keep for the answer (or to clear once consumed).
    changes: LinkChanges = field(default_factory=LinkChanges)
    # Review mode: the findings the agent reported (untrusted).
    findings: Any = None


def pick_model(task: Task, profile: Profile, emit: Emit) -> str:
    """The task's ``--model`` when the profile allows it, else the profile's model."""
    assert profile.model is not None  # a builtin profile always has one (config validation)
    asked = TaskLinks.of(task).model
    if not asked or not asked.strip() or asked == profile.model:
        return profile.model
    if profile.models is not None and asked not in profile.models:
        allowed = ", ".join(profile.models) or "none"
        emit(
            "error",
            {"message": f"model {asked!r} is not allowed here (allowed: {allowed}); using {profile.model}"},
        )
        return profile.model
    return asked.strip()


def build_llm(profile: Profile, settings: Settings) -> LLM:
    """The provider client for ``profile``; :class:`ModelFatal` when its key is not configured."""
    if profile.provider == "anthropic":
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        if not key:
            raise ModelFatal("ANTHROPIC_API_KEY is not set: the built-in Anthropic agent cannot run")
        return AnthropicLLM(key, settings.anthropic_base_url, stream=profile.stream)
    if profile.provider == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        if not key and not settings.openai_base_url:
            raise ModelFatal("OPENAI_API_KEY is not set: the built-in OpenAI agent cannot run")
        # A local OpenAI-compatible server (OPENAI_BASE_URL) often needs no key at all.
        return OpenAILLM(key or "not-needed", settings.openai_base_url, stream=profile.stream)
    raise ModelFatal(f"profile has no model provider (got {profile.provider!r})")


async def run_agent(
    *,
    llm: LLM,
    sandbox: Sandbox,
    handle: SandboxHandle,
    config: HandoffConfig,
    profile: Profile,
    task: Task,
    run: Run,
    budget: Budget,
    emit: Emit,
    cancel: asyncio.Event,
    timeout_s: float,
    budget_hit: Callable[[], str | None],
    branch: str,
    timeout_is_budget: bool = False,
    retry: RetryPolicy | None = None,
) -> AgentRun:
    """Run the agent in ``handle``'s container until it finishes, asks, or a limit stops it.

    ``timeout_is_budget``: the deadline is the task's wall-clock budget (not the profile's
    limit), so reaching it is a budget stop.
    """
    model = pick_model(task, profile, emit)
    tools = ToolBox(sandbox, handle, timeout_s=profile.tool_timeout_s, output_chars=profile.tool_output_chars)
    max_steps = min(profile.max_steps, budget.max_steps or profile.max_steps)
    automation = AutomationLinks.of(task)
    review = automation is not None and not automation.publishes
    loop = AgentLoop(
        llm=llm,
        tools=tools,
        emit=emit,
        model=model,
        system=REVIEW_SYSTEM_PROMPT if review else SYSTEM_PROMPT,
        specs=list(REVIEW_SPECS if review else SPECS),
        messages=[],
        limits=LoopLimits(
            max_steps, profile.max_output_tokens, budget.max_input_tokens, budget.max_output_tokens
        ),
        cancel=cancel,
        deadline=time.monotonic() + timeout_s,
        price=config.price(model),
        budget_hit=budget_hit,
        retry=retry or RetryPolicy(),
    )
    if loop.price is None and budget.max_cost_usd is not None:
        emit("error", {"message": f"no price for model {model!r} in handoff.yml: its cost is not counted"})
    emit("progress", {"step": "agent", "provider": llm.provider, "model": model})
    setup = await loop.guard(_prepare(tools, task, profile, emit))
    links = TaskLinks.of(task)
    saved = links.conversation
    if isinstance(setup, LoopResult):
        result = setup
    else:
        loop.messages = _resumed(saved, links, task, run, setup) or [
            user(task_message(task, run.instructions or task.instructions, setup, branch))
        ]
        result = await loop.run()
    if result.status == "timeout" and timeout_is_budget:
        reason = f"wall-clock budget of {timeout_s:g} s used"
        result = LoopResult("budget", reason=reason, last_text=result.last_text)
    agent = AgentRun(
        result=result, model=loop.model_seen or model, steps=loop.steps, findings=result.findings
    )
    if result.status == "asked":
        agent.changes = LinkChanges(
            conversation={
                "task_id": task.id,
                "run_id": run.id,
                "pending_ask_id": result.pending_ask_id,
                "question": result.question,
                # A retry repeats these instructions; an answer (a follow-up) brings new ones.
                "asked_with": run.instructions,
                "messages": persistable(loop.messages),
            }
        )
    elif saved:
        agent.changes = LinkChanges(conversation=None)  # consumed: a later follow-up starts afresh
    agent.summary = result.summary if result.status == "finished" else _progress(result, loop, tools)
    return agent


async def _prepare(tools: ToolBox, task: Task, profile: Profile, emit: Emit) -> Any:
    await tools.probe()
    repo = await read_repo(tools, task)
    await run_setup(tools, repo, profile.setup_timeout_s, emit)
    return repo


def _resumed(saved: Any, links: TaskLinks, task: Task, run: Run, setup: Any) -> list[Message] | None:
    """The saved conversation with the answer as the ``ask`` result, or None to start afresh."""
    if not isinstance(saved, dict) or saved.get("task_id") != task.id or not saved.get("pending_ask_id"):
        return None
    messages = saved.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    done = links.followups_done
    author = done[-1].author if done else None
    # A follow-up (the answer) becomes the run's instructions; a retry repeats the asking run's.
    answered = bool(run.instructions) and run.instructions != saved.get("asked_with", task.instructions)
    text = answer_message(run.instructions or "", author, setup) if answered else NO_ANSWER
    answer = ToolResult(str(saved["pending_ask_id"]), ASK, text)
    messages = [dict(m) for m in messages]
    if messages[-1].get("role") == "tool":
        last = messages[-1]
        messages[-1] = {"role": "tool", "results": [*last.get("results", []), answer.message_part()]}
    else:
        messages.append(tool_message([answer]))
    return messages


def _progress(result: LoopResult, loop: AgentLoop, tools: ToolBox) -> str:
    """What was done, for a run that stopped before finishing (the PR body says so)."""
    why = {
        "budget": f"budget exceeded ({result.reason})",
        "timeout": "out of time",
        "cancelled": "cancelled",
        "failed": f"failed ({result.reason})",
        "asked": f"waiting for an answer: {result.question}",
    }.get(result.status, result.status)
    lines = [f"Stopped before finishing: {why}.", f"Model calls: {loop.steps}."]
    if tools.changed:
        lines.append("Files edited: " + ", ".join(f"`{p}`" for p in sorted(tools.changed)) + ".")
    if tools.commands:
        lines.append("Last commands: " + "; ".join(f"`{c[:100]}`" for c in tools.commands[-3:]) + ".")
    if result.last_text:
        lines.append(f"Last note from the agent: {result.last_text[:1500]}")
    return "\n".join(lines)
