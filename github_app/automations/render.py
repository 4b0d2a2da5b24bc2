"""What a review shows on GitHub: inline comments, the "Handoff review" check run, the summary.

Pure functions of checked findings (:mod:`core.review`) and the task's state, read at send time.
Every text is redacted and bounded by GitHub's limits; a finding's own words are quoted as its
author (the agent) wrote them, after Handoff checked where they may go — never as Handoff's
verdict on the task, which only the orchestrator states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.models import ReviewRecord, Task
from core.redact import redact
from core.review import Finding, Placement
from github_app.api import CHECK_TEXT_LIMIT, COMMENT_LIMIT, MAX_ANNOTATIONS, marker
from github_app.render import fit

REVIEW_CHECK = "Handoff review"
FINDING_MARK = "<!-- handoff:finding:{fp} -->"
_ICON = {"error": "🔴", "warning": "🟠", "info": "🔵"}
_LEVEL = {"error": "failure", "warning": "warning", "info": "notice"}
_STATE = {
    "queued": "Queued",
    "waiting": "Waiting",
    "running": "Reviewing",
    "succeeded": "Reviewed",
    "failed": "Review failed",
    "cancelled": "Review cancelled",
    "timed_out": "Review timed out",
    "budget_exceeded": "Review stopped at its budget",
}
__all__ = ["MAX_ANNOTATIONS", "REVIEW_CHECK", "ReviewView", "annotations_of", "check_body", "comment_body"]


@dataclass
class ReviewView:
    """A review task, its review and where its findings go."""

    task: Task
    record: ReviewRecord | None
    placements: list[Placement] = field(default_factory=list)
    url: str = ""
    resolved: int = 0
    secret_patterns: list[str] = field(default_factory=list)

    @property
    def sha(self) -> str:
        """The reviewed head commit, short."""
        return (self.record.head_sha if self.record else "")[:7]

    @property
    def done(self) -> bool:
        """Whether the task has ended."""
        return self.task.finished_at is not None

    def text(self, value: str, limit: int) -> str:
        """``value`` redacted and cut to ``limit``."""
        return fit(redact(value, self.secret_patterns), limit)


def _fence(text: str, lang: str = "") -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{lang}\n{text}\n{ticks}"


def comment_body(finding: Finding, patterns: list[str]) -> str:
    """An inline comment: severity, title, body and a suggestion block (with a hidden marker)."""
    title = f" **{redact(finding.title, patterns)}**" if finding.title else ""
    parts = [f"{_ICON[finding.severity]} _{finding.severity}_{title}", redact(finding.body, patterns)]
    if finding.suggestion is not None and finding.side == "RIGHT":
        parts.append(_fence(redact(finding.suggestion, patterns), "suggestion"))
    parts.append(FINDING_MARK.format(fp=finding.fingerprint))
    return fit("\n\n".join(parts), COMMENT_LIMIT)


def _where(finding: Finding) -> str:
    lines = f"{finding.first}-{finding.line}" if finding.first != finding.line else str(finding.line)
    return f"`{finding.path}:{lines}`"


def _outside(view: ReviewView) -> list[str]:
    lines = []
    for p in view.placements:
        if p.inline:
            continue
        f = p.finding
        title = f" **{f.title}**" if f.title else ""
        lines.append(f"- {_ICON[f.severity]} {_where(f)}{title}: {f.body[:1500]}")
    return lines


def _headline(view: ReviewView) -> str:
    state = _STATE.get(view.task.state, view.task.state)
    if view.task.state == "succeeded":
        count = len(view.placements)
        state += f" `{view.sha}`: " + (
            f"{count} finding{'s' if count != 1 else ''}" if count else "no findings"
        )
    elif view.sha:
        state += f" `{view.sha}`"
    if view.task.state_reason and view.task.state not in ("running", "succeeded", "queued"):
        state += f" — {view.task.state_reason}"
    return state


def summary_body(view: ReviewView, key: str, rule: str) -> str:
    """The summary comment of a pull request and rule (edited in place across pushes)."""
    parts = [marker(key), f"**Handoff review** · rule `{rule}` · {_headline(view)}"]
    if view.task.state == "succeeded":
        inline = sum(1 for p in view.placements if p.inline)
        if inline:
            parts.append(f"{inline} finding(s) on the changed lines are inline comments on `{view.sha}`.")
        outside = _outside(view)
        if outside:
            parts.append("**Outside the diff**\n\n" + "\n".join(outside))
        if view.record is not None and view.record.summary:
            parts.append("**Summary from the agent**\n\n" + view.record.summary[:6000])
    if view.resolved:
        parts.append(f"{view.resolved} earlier thread(s) resolved: their findings are gone.")
    footer = f"<sub>task [`{view.task.id}`]({view.url}) · `/handoff review` runs it again</sub>"
    return view.text("\n\n".join(parts), COMMENT_LIMIT - len(footer) - 2) + "\n\n" + footer


def check_body(view: ReviewView) -> dict[str, Any]:
    """The "Handoff review" check run's fields (no ``head_sha``, no annotations)."""
    body: dict[str, Any] = {"name": REVIEW_CHECK, "details_url": view.url, "external_id": view.task.id}
    state = view.task.state
    if view.done:
        body["status"] = "completed"
        if state == "succeeded":
            body["conclusion"] = "neutral" if view.placements else "success"
        else:
            body["conclusion"] = {"cancelled": "cancelled", "timed_out": "timed_out"}.get(state, "neutral")
        finished: datetime = view.task.finished_at or view.task.updated_at
        body["completed_at"] = finished.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        body["status"] = "in_progress" if state == "running" else "queued"
    outside = _outside(view)
    summary = [_headline(view)]
    if outside:
        summary.append("**Outside the diff**\n\n" + "\n".join(outside))
    body["output"] = {
        "title": view.text(_headline(view), 200),
        "summary": view.text("\n\n".join(summary), CHECK_TEXT_LIMIT),
    }
    return body


def annotations_of(view: ReviewView) -> list[dict[str, Any]]:
    """One annotation per finding on the head commit (GitHub takes 50 per request)."""
    found = []
    for p in view.placements:
        f = p.finding
        if f.side != "RIGHT":
            continue
        found.append(
            {
                "path": f.path,
                "start_line": f.first,
                "end_line": f.line,
                "annotation_level": _LEVEL[f.severity],
                "title": view.text(f.title, 255) if f.title else None,
                "message": view.text(f.body, 64_000),
            }
        )
    return [{k: v for k, v in a.items() if v is not None} for a in found]
