"""What GitHub shows: the tracking comment and the check run, rendered from a :class:`TaskView`.

Pure functions of data read from the database at send time, so the latest state always wins
whatever order outbox rows were coalesced in. Every text respects GitHub's limits (comment body
65,536 characters, check-run summary and text 65,535 each, ≤ 3 actions with short labels) and goes
through :func:`core.redact.redact` first: errors can quote tokens the agent or git saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.quoting import inert
from core.redact import redact
from github_app.api import CHECK_TEXT_LIMIT, COMMENT_LIMIT, marker

STATE_TITLE = {
    "queued": "Queued",
    "waiting": "Waiting",
    "running": "Running",
    "succeeded": "Done",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "timed_out": "Timed out",
    "budget_exceeded": "Budget exceeded",
}
CONCLUSION = {
    "succeeded": "success",
    "failed": "failure",
    "cancelled": "cancelled",
    "timed_out": "timed_out",
    "budget_exceeded": "action_required",
}
RETRY = {"label": "Retry", "description": "Run this task again", "identifier": "retry"}
CANCEL = {"label": "Cancel", "description": "Stop this task", "identifier": "cancel"}
STEPS = [
    ("queued", "Queued"),
    ("checkout", "Repository checked out"),
    ("agent", "Agent at work"),
    ("push", "Branch pushed"),
    ("pr", "Pull request opened"),
]


@dataclass
class TaskView:
    """What the database says about a task, for rendering."""

    task_id: str
    state: str
    reason: str | None
    created_at: datetime
    finished_at: datetime | None
    now: datetime
    url: str
    attempt: int = 0
    steps: set[str] = field(default_factory=set)
    latest_step: str | None = None
    position: int | None = None
    pr_url: str | None = None
    pr_number: int | None = None
    branch: str | None = None
    files: list[str] = field(default_factory=list)
    summary: str | None = None
    errors: list[str] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    duration_s: float | None = None
    notes: list[str] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    secret_patterns: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        """True once the task has ended."""
        return self.state in CONCLUSION


def _elapsed(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s" if minutes else f"{secs}s"


def checklist(view: TaskView) -> list[str]:
    """The progress checklist: ✅ done, ⏳ current, ❌ where it stopped, ⬜ to do."""
    done = {"queued": view.attempt > 0 or view.terminal}
    done["checkout"] = "agent" in view.steps
    done["agent"] = "push" in view.steps or bool(view.files) or view.state == "succeeded"
    done["push"] = (
        bool(view.files) or bool(view.pr_url) or (view.state == "succeeded" and "push" in view.steps)
    )
    done["pr"] = bool(view.pr_url)
    lines: list[str] = []
    current_marked = False
    for key, label in STEPS:
        if done.get(key):
            icon = "✅"
        elif not current_marked and not (view.state == "succeeded" and key in ("push", "pr")):
            current_marked = True
            icon = "❌" if view.terminal else "⏳"
            if key == "agent" and view.latest_step and view.latest_step not in dict(STEPS):
                label += f" — {view.latest_step}"
        else:
            icon = "⬜"
        lines.append(f"- {icon} {label}")
    return lines


def _head(view: TaskView) -> str:
    title = STATE_TITLE.get(view.state, view.state)
    reason = f" — {redact(view.reason, view.secret_patterns)}" if view.reason else ""
    return f"**Handoff** · task `{view.task_id}` · **{title}**{reason}"


def _facts(view: TaskView) -> list[str]:
    end = view.finished_at or view.now
    rows = [("Elapsed", _elapsed((end - view.created_at).total_seconds()))]
    if view.state == "waiting" and view.position:
        rows.append(("Queue position", str(view.position)))
    if view.attempt:
        rows.append(("Attempt", str(view.attempt)))
    if view.pr_url:
        rows.append(("Pull request", f"[#{view.pr_number or ''}]({view.pr_url})".replace("[#]", "[link]")))
    if view.branch:
        rows.append(("Branch", f"`{view.branch}`"))
    if view.duration_s is not None:
        rows.append(("Run duration", _elapsed(view.duration_s)))
    if view.tokens_in or view.tokens_out:
        rows.append(("Tokens", f"{view.tokens_in:,} in / {view.tokens_out:,} out"))
    if view.cost_usd:
        rows.append(("Cost", f"${view.cost_usd:.4f}"))
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _details(view: TaskView) -> list[str]:
    parts: list[str] = []
    if view.summary:
        parts.append(f"**Summary**\n\n{inert(redact(view.summary, view.secret_patterns))[:20_000]}")
    if view.files:
        shown = ", ".join(f"`{f}`" for f in view.files[:100])
        more = f" and {len(view.files) - 100} more" if len(view.files) > 100 else ""
        parts.append(f"**Files changed ({len(view.files)})**: {shown}{more}")
    if view.errors:
        text = "\n".join(redact(e, view.secret_patterns)[:2000] for e in view.errors[-10:])
        fenced = text.replace("```", "'''")  # an error quoting a fence must not end ours
        parts.append(f"**Errors**\n\n```\n{fenced}\n```")
    if view.notes:
        parts.append("**`.handoff.yml`**\n\n" + "\n".join(f"- {n}" for n in view.notes))
    return parts


def fit(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    if len(text) <= limit:
        return text
    note = "\n\n… (cut to fit GitHub's size limit)"
    return text[: limit - len(note)] + note


def tracking_comment(view: TaskView, key: str) -> str:
    """The body of the tracking comment (with its hidden marker)."""
    footer = (
        f"<sub>`/handoff status` · `/handoff cancel` · `/handoff retry` · `/handoff help` · "
        f"[details]({view.url})</sub>"
    )
    sections = [
        marker(key),
        _head(view),
        "\n".join(checklist(view)),
        "\n".join(_facts(view)),
        *_details(view),
    ]
    body = "\n\n".join(sections)
    # Keep the footer: trim the details rather than the commands.
    return fit(body, COMMENT_LIMIT - len(footer) - 2) + "\n\n" + footer


def check_run(view: TaskView, name: str) -> dict[str, Any]:
    """The fields of the check run (without ``head_sha``, which only a create sends)."""
    body: dict[str, Any] = {"name": name, "details_url": view.url, "external_id": view.task_id}
    if view.terminal:
        body["status"] = "completed"
        body["conclusion"] = CONCLUSION[view.state]
        body["completed_at"] = (view.finished_at or view.now).strftime("%Y-%m-%dT%H:%M:%SZ")
        body["actions"] = [RETRY]
    else:
        body["status"] = "in_progress" if view.state == "running" else "queued"
        body["actions"] = [CANCEL]
    title = f"{STATE_TITLE.get(view.state, view.state)}" + (f": {view.reason}" if view.reason else "")
    summary = "\n\n".join([_head(view), "\n".join(checklist(view)), "\n".join(_facts(view))])
    body["output"] = {
        "title": redact(title, view.secret_patterns)[:200],
        "summary": fit(summary, CHECK_TEXT_LIMIT),
        "text": fit("\n\n".join(_details(view)) or "No details yet.", CHECK_TEXT_LIMIT),
    }
    return body
