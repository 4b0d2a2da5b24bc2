"""The words and layout of every message the bot posts (built with :mod:`bot.blocks`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.blocks import (
    Block,
    actions,
    button,
    clip,
    code_block,
    context,
    escape,
    fit_message,
    section,
    sections,
)
from core.links import SlackLinks
from core.models import Task
from core.snapshot import TaskSnapshot
from core.states import TaskState

CANCEL = "handoff_cancel"
RETRY = "handoff_retry"
OPEN_PR = "handoff_open_pr"
VIEW_RUN = "handoff_view_run"

EMOJI = {
    "queued": ":hourglass_flowing_sand:",
    "waiting": ":double_vertical_bar:",
    "running": ":gear:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "cancelled": ":black_square_for_stop:",
    "timed_out": ":alarm_clock:",
    "budget_exceeded": ":money_with_wings:",
}
FAILED = frozenset({TaskState.failed, TaskState.timed_out, TaskState.budget_exceeded})
# Room left for the header, the facts and the buttons when a summary is split over sections.
_SUMMARY_SECTIONS = 40


def label(state: str) -> str:
    """``timed_out`` -> ``Timed out``."""
    return state.replace("_", " ").capitalize()


def quote(text: str) -> str:
    """Slack block quote of (already escaped) ``text``."""
    return "\n".join(f"> {line}" for line in text.split("\n"))


def duration(seconds: float) -> str:
    """``75`` -> ``1m 15s``."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def run_url(public_url: str, task_id: str) -> str:
    """The dashboard page of a task."""
    return f"{public_url.rstrip('/')}/tasks/{task_id}"


def _facts(view: TaskSnapshot) -> str:
    task = view.task
    facts: list[str] = []
    if view.step:
        facts.append(f"Step: {escape(clip(view.step, 200))}")
    facts.append(f"Elapsed: {duration(view.run_elapsed_s)}")
    if view.run is not None:
        facts.append(f"Attempt {view.run.attempt}")
    if view.position:
        facts.append(f"Queue position: {view.position}")
    usage = view.usage
    if usage.tokens_in or usage.tokens_out:
        facts.append(f"Tokens: {usage.tokens_in:,} in / {usage.tokens_out:,} out")
    if usage.cost_usd:
        facts.append(f"Cost: ${usage.cost_usd:.4f}")
    slack = SlackLinks.of(task)
    if slack is not None and slack.user:
        facts.append(f"Requested by <@{slack.user}>")
    elif task.requester:
        facts.append(f"Requested by {escape(task.requester)}")
    return " · ".join(facts)


def buttons(task: Task, public_url: str) -> Block:
    """Cancel while it runs, Retry once it ended, the pull request and the run page."""
    state = TaskState(task.state)
    elements: list[dict[str, Any]] = []
    if not state.terminal:
        elements.append(button("Cancel", CANCEL, value=task.id, style="danger"))
    else:
        elements.append(button("Retry", RETRY, value=task.id))
    if task.pr_url:
        elements.append(button("Open pull request", OPEN_PR, value=task.id, url=task.pr_url, style="primary"))
    elements.append(button("View run", VIEW_RUN, value=task.id, url=run_url(public_url, task.id)))
    return actions(*elements, block_id=f"handoff:{task.id}")


def status_message(view: TaskSnapshot, public_url: str) -> tuple[str, list[Block]]:
    """The status message at the top of a task's thread."""
    task = view.task
    state = TaskState(task.state)
    head = f"{EMOJI.get(task.state, '')} *{label(task.state)}* · `{task.id}` · `{escape(task.repo)}`"
    if task.state_reason and state is not TaskState.running:
        head += f"\n{escape(clip(task.state_reason, 1000))}"
    blocks: list[Block] = [section(head), section(quote(escape(clip(task.instructions, 1500))))]
    blocks.append(context(_facts(view)))
    if state is TaskState.running and view.log_tail:
        blocks.append(section("*Latest output*\n" + code_block(view.log_tail)))
    if task.pr_url:
        blocks.append(section(f":twisted_rightwards_arrows: <{task.pr_url}|Pull request>"))
    if state.terminal and task.summary:
        blocks.extend(sections("*Summary*\n" + escape(task.summary), _SUMMARY_SECTIONS))
    blocks.append(buttons(task, public_url))
    text = f"Handoff task {task.id} on {task.repo}: {label(task.state)}"
    if view.step and not state.terminal:
        text += f" ({view.step})"
    return fit_message(escape(text), blocks)


def reply_message(text: str, log_lines: Sequence[str] = ()) -> tuple[str, list[Block]]:
    """A thread reply: ``text`` (mrkdwn, already escaped) over sections, then the log tail."""
    blocks = sections(text, _SUMMARY_SECTIONS)
    if log_lines:
        blocks.append(section("*Last lines of output*\n" + code_block(list(log_lines))))
    return fit_message(text, blocks)


def started(attempt: int) -> str:
    """Milestone: a run started."""
    return f":arrow_forward: Started (attempt {attempt})."


def question(data: dict[str, Any]) -> str:
    """Milestone: the agent asks something."""
    asked = data.get("question") or data.get("text") or data.get("message") or data.get("value") or ""
    return (
        ":question: *The agent asks:*\n"
        + quote(escape(clip(str(asked), 2500)))
        + "\n_Reply in this thread to answer; it goes to the agent with the next run._"
    )


def follow_up_elsewhere(author: str, source: str, text: str) -> str:
    """Milestone: someone asked for a follow-up on the task somewhere else (on its pull request)."""
    where = {"github": "on GitHub", "api": "through Handoff's API"}.get(source, f"in {source}")
    return f":speech_balloon: Follow-up from *{escape(author)}* {where}:\n" + quote(escape(clip(text, 2500)))


def pull_request(url: str, first: bool) -> str:
    """Milestone: a pull request was opened or updated."""
    verb = "opened" if first else "updated"
    return f":twisted_rightwards_arrows: Pull request {verb}: <{url}|{escape(url)}>"


def finished(task: Task, data: dict[str, Any]) -> str:
    """Milestone: the task ended (the reason when it did not succeed)."""
    state = TaskState(data.get("state", task.state))
    if state is TaskState.succeeded:
        summary = data.get("summary") or task.summary or "done"
        return f":white_check_mark: *Finished:* {escape(str(summary))}"
    reason = escape(str(data.get("reason") or task.state_reason or label(state.value)))
    if state is TaskState.cancelled:
        return f":black_square_for_stop: *Cancelled:* {reason}"
    return f"{EMOJI.get(state.value, ':x:')} *{label(state.value)}:* {reason}"


def task_list(tasks: Sequence[Task]) -> str:
    """``/handoff status``: the person's tasks that have not ended."""
    if not tasks:
        return "You have no running Handoff tasks."
    lines = ["*Your running tasks*"]
    for task in tasks:
        first = (task.instructions.strip().splitlines() or [""])[0]
        lines.append(
            f"• `{task.id}` {EMOJI.get(task.state, '')} {label(task.state)} · `{escape(task.repo)}` · "
            f"{escape(clip(first, 80))}"
        )
    return "\n".join(lines)


def help_text(shared: str, command: str) -> str:
    """The shared command registry's help (Slack's commands included), then Slack's other ways in."""
    extra = [
        "",
        "*In Slack*",
        f"• `{command} owner/repo <what to do>` — start a task on that repository from any channel.",
        "• `@Handoff <what to do> [in owner/repo]` in a channel, or a direct message to Handoff.",
        f"• `{command} status` — your tasks that are still going.",
        "• In a task's thread: a reply is a follow-up; `cancel`, `retry` and `status` work there too.",
    ]
    return shared.replace("/handoff", command) + "\n" + "\n".join(extra)
