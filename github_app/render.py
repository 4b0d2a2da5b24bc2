"""What GitHub shows: the tracking comment and the check run, rendered from a task snapshot.

Pure functions of data read from the database at send time, so the latest state always wins
whatever order outbox rows were coalesced in. Every text respects GitHub's limits (comment body
65,536 characters, check-run summary and text 65,535 each, ≤ 3 actions with short labels) and goes
through :func:`core.redact.redact` first: errors can quote tokens the agent or git saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.quoting import inert
from core.redact import redact
from core.snapshot import TaskSnapshot
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


@dataclass(frozen=True)
class Page:
    """A task snapshot with what GitHub's rendering adds: the task's page and the secrets to mask."""

    snap: TaskSnapshot
    url: str
    secret_patterns: list[str] = field(default_factory=list)

    def redact(self, text: str) -> str:
        """``text`` with tokens and configured secrets masked."""
        return redact(text, self.secret_patterns)


def _elapsed(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s" if minutes else f"{secs}s"


def checklist(snap: TaskSnapshot) -> list[str]:
    """The progress checklist: ✅ done, ⏳ current, ❌ where it stopped, ⬜ to do."""
    state, pr_url = snap.task.state, snap.task.pr_url
    done = {"queued": snap.attempt > 0 or snap.terminal}
    done["checkout"] = "agent" in snap.steps
    done["agent"] = "push" in snap.steps or bool(snap.files) or state == "succeeded"
    done["push"] = bool(snap.files) or bool(pr_url) or (state == "succeeded" and "push" in snap.steps)
    done["pr"] = bool(pr_url)
    lines: list[str] = []
    current_marked = False
    for key, label in STEPS:
        if done.get(key):
            icon = "✅"
        elif not current_marked and not (state == "succeeded" and key in ("push", "pr")):
            current_marked = True
            icon = "❌" if snap.terminal else "⏳"
            if key == "agent" and snap.step and snap.step not in dict(STEPS):
                label += f" — {snap.step}"
        else:
            icon = "⬜"
        lines.append(f"- {icon} {label}")
    return lines


def _head(page: Page) -> str:
    task = page.snap.task
    title = STATE_TITLE.get(task.state, task.state)
    reason = f" — {page.redact(task.state_reason)}" if task.state_reason else ""
    return f"**Handoff** · task `{task.id}` · **{title}**{reason}"


def _facts(page: Page) -> list[str]:
    snap, task = page.snap, page.snap.task
    rows = [("Elapsed", _elapsed(snap.task_elapsed_s))]
    if task.state == "waiting" and snap.position:
        rows.append(("Queue position", str(snap.position)))
    if snap.attempt:
        rows.append(("Attempt", str(snap.attempt)))
    if task.pr_url:
        number = snap.links.pr_number
        rows.append(("Pull request", f"[#{number or ''}]({task.pr_url})".replace("[#]", "[link]")))
    if task.branch:
        rows.append(("Branch", f"`{task.branch}`"))
    duration = snap.run.duration_s if snap.run is not None else None
    if duration is not None:
        rows.append(("Run duration", _elapsed(duration)))
    usage = snap.usage
    if usage.tokens_in or usage.tokens_out:
        rows.append(("Tokens", f"{usage.tokens_in:,} in / {usage.tokens_out:,} out"))
    if usage.cost_usd:
        rows.append(("Cost", f"${usage.cost_usd:.4f}"))
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _details(page: Page) -> list[str]:
    snap = page.snap
    parts: list[str] = []
    if snap.task.summary:
        parts.append(f"**Summary**\n\n{inert(page.redact(snap.task.summary))[:20_000]}")
    if snap.files:
        shown = ", ".join(f"`{f}`" for f in snap.files[:100])
        more = f" and {len(snap.files) - 100} more" if len(snap.files) > 100 else ""
        parts.append(f"**Files changed ({len(snap.files)})**: {shown}{more}")
    if snap.errors:
        text = "\n".join(page.redact(e)[:2000] for e in snap.errors[-10:])
        fenced = text.replace("```", "'''")  # an error quoting a fence must not end ours
        parts.append(f"**Errors**\n\n```\n{fenced}\n```")
    notes = snap.notes
    if notes:
        parts.append("**`.handoff.yml`**\n\n" + "\n".join(f"- {n}" for n in notes))
    return parts


def fit(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    if len(text) <= limit:
        return text
    note = "\n\n… (cut to fit GitHub's size limit)"
    return text[: limit - len(note)] + note


def tracking_comment(page: Page, key: str) -> str:
    """The body of the tracking comment (with its hidden marker)."""
    footer = (
        f"<sub>`/handoff status` · `/handoff cancel` · `/handoff retry` · `/handoff help` · "
        f"[details]({page.url})</sub>"
    )
    sections = [
        marker(key),
        _head(page),
        "\n".join(checklist(page.snap)),
        "\n".join(_facts(page)),
        *_details(page),
    ]
    body = "\n\n".join(sections)
    # Keep the footer: trim the details rather than the commands.
    return fit(body, COMMENT_LIMIT - len(footer) - 2) + "\n\n" + footer


def check_run(page: Page, name: str) -> dict[str, Any]:
    """The fields of the check run (without ``head_sha``, which only a create sends)."""
    snap, task = page.snap, page.snap.task
    body: dict[str, Any] = {"name": name, "details_url": page.url, "external_id": task.id}
    if snap.terminal:
        body["status"] = "completed"
        body["conclusion"] = CONCLUSION[task.state]
        body["completed_at"] = (task.finished_at or snap.now).strftime("%Y-%m-%dT%H:%M:%SZ")
        body["actions"] = [RETRY]
    else:
        body["status"] = "in_progress" if task.state == "running" else "queued"
        body["actions"] = [CANCEL]
    reason = task.state_reason
    title = f"{STATE_TITLE.get(task.state, task.state)}" + (f": {reason}" if reason else "")
    summary = "\n\n".join([_head(page), "\n".join(checklist(snap)), "\n".join(_facts(page))])
    body["output"] = {
        "title": page.redact(title)[:200],
        "summary": fit(summary, CHECK_TEXT_LIMIT),
        "text": fit("\n\n".join(_details(page)) or "No details yet.", CHECK_TEXT_LIMIT),
    }
    return body
