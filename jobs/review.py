"""The end of a review-mode run: nothing is published, the agent's findings are checked and kept.

A review task (``AutomationLinks.mode == "review"``) runs like any other — same sandbox, same
budgets — but its workspace publishes nothing: whatever the agent changed in the work tree is
never committed or pushed (and its git token can only read). What it reported — the built-in
agent's ``report_findings``, a ``result`` event's ``findings``, or a ``handoff-findings`` block in a
CLI's final summary — goes through :func:`core.review.parse_findings` (bounded, paths checked) and
is stored for the GitHub notifier; dropped entries are counted in the run's events.
"""

from __future__ import annotations

from typing import Any

from core.db import Sessions
from core.links import AutomationLinks
from core.models import EventType, Run, Task
from core.review import Finding, findings_in_text, parse_findings
from core.review_records import ReviewRecords
from jobs.pump import EventPump


def publishes(task: Task) -> bool:
    """Whether a run of ``task`` may commit and push (not in review mode)."""
    automation = AutomationLinks.of(task)
    return automation is None or automation.publishes


def _redacted(finding: Finding, pump: EventPump) -> Finding:
    data: dict[str, Any] = pump.redactor.data(finding.model_dump())
    return Finding.model_validate(data)


async def finish_review(sessions: Sessions, task: Task, run: Run, reported: Any, pump: EventPump) -> str:
    """Check and store the run's findings (``reported`` by the built-in agent, else found in its
    events or summary); return the run's summary. Nothing is pushed."""
    raw = reported if reported is not None else pump.findings
    if raw is None:
        raw = findings_in_text(pump.summary)
    checked = parse_findings(raw)
    findings = [_redacted(f, pump) for f in checked.items]
    if checked.dropped:
        pump.add(
            EventType.log.value,
            {
                "text": "[handoff] findings dropped: " + "; ".join(checked.dropped[:20]),
                "dropped": len(checked.dropped),
            },
        )
    summary = pump.summary
    if summary and "```handoff-findings" in summary:
        summary = summary.split("```handoff-findings")[0].strip() or None
    stored = await ReviewRecords(sessions).finish(task.id, run.id, findings, summary)
    pump.add(EventType.progress.value, {"step": "review", "findings": len(findings), "stored": stored})
    count = len(findings)
    return f"{count} finding{'s' if count != 1 else ''}" + (f": {summary}" if summary else "")
