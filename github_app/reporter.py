"""The GitHub reporter: which task events should refresh the check run and the tracking comment.

Pure (no I/O, called inside the transaction that stores the event): it emits ``upsert`` rows
(:class:`~github_app.operations.Tracking`, :class:`~github_app.operations.Check`) keyed per task,
and the outbox keeps only the latest pending one per key — so a burst of a thousand agent events
costs a couple of API calls. The rows carry routing data only; the notifier renders the task
from the database when it sends, so what GitHub shows is never older than the row that caused it.
"""

from __future__ import annotations

from core.links import GitHubLinks
from core.models import EventType, RunEvent, Task
from core.outbox import OutboxMessage, is_first
from github_app.automations.reporter import is_review
from github_app.operations import CHANNEL, Check, Tracking

# Log lines, tool calls and heartbeats change nothing the comment shows.
_SHOWN = frozenset(
    {EventType.status, EventType.progress, EventType.result, EventType.error, EventType.question}
)


def check_key(task_id: str) -> str:
    """Outbox/ExternalRef key of a task's check run."""
    return f"github:check:{task_id}"


def comment_key(task_id: str) -> str:
    """Outbox/ExternalRef key of a task's tracking comment (also its hidden marker)."""
    return f"github:comment:{task_id}"


class GitHubReporter:
    """Turns task events into check-run and tracking-comment upserts."""

    channel = CHANNEL

    def messages(self, task: Task, event: RunEvent) -> list[OutboxMessage]:
        """Upserts for ``event`` when it changes what GitHub shows; nothing for other tasks."""
        gh = GitHubLinks.of(task)
        if gh is None or event.type not in _SHOWN or is_review(task):
            return []  # a review reports as a review (github_app.automations.reporter)
        where = {"installation_id": gh.installation_id, "repo": task.repo, "number": gh.number}
        tracking = Tracking(task_id=task.id, seq=event.seq, **where)
        # A task with no issue or pull request (a schedule's) has no tracking comment.
        messages = [OutboxMessage(comment_key(task.id), "upsert", tracking)] if gh.number is not None else []
        if gh.head_sha:
            # The queued check run is an acknowledgement: it goes in its own lane.
            check = Check(task_id=task.id, seq=event.seq, head_sha=gh.head_sha, ack=is_first(event), **where)
            messages.append(OutboxMessage(check_key(task.id), "upsert", check))
        return messages
