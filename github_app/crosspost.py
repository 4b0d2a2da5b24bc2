"""A pull request hears about follow-ups asked in Slack on its task (Slack hears of GitHub's in turn).

A task asked for in Slack on a GitHub repository lives in two places: its Slack thread and, once
opened, its pull request. A follow-up asked in one reaches the task either way; the other side is
told with one comment, so whoever reads the pull request knows why new commits appear. Reporters
are pure: this writes one ``comment`` outbox row per follow-up (keyed by its event, so a replay
writes nothing twice).
"""

from __future__ import annotations

from core.links import FollowUpNotice, GitHubLinks, TaskLinks
from core.models import EventType, RunEvent, Task
from core.outbox import OutboxMessage
from core.quoting import inert
from github_app.operations import CHANNEL, Comment

SOURCES = {"slack": "in Slack", "api": "through Handoff's API"}


class FollowUpReporter:
    """Comments on a task's pull request when a follow-up on it was asked outside GitHub."""

    channel = CHANNEL

    def messages(self, task: Task, event: RunEvent) -> list[OutboxMessage]:
        """One comment for a follow-up asked elsewhere on a task with a pull request."""
        if event.type != EventType.status.value:
            return []
        notice = FollowUpNotice.of(event.data)
        if notice is None or notice.source == "github":
            return []
        gh = GitHubLinks.of(task)
        number = TaskLinks.of(task).pr_number if gh is not None else None
        if gh is None or number is None:
            return []
        quoted = "\n".join(f"> {line}" for line in inert(notice.text).splitlines() or [""])
        where = SOURCES.get(notice.source, f"in {notice.source}")
        body = (
            f"**{inert(notice.author)}** asked for a follow-up {where}:\n\n{quoted}\n\n"
            f"Handoff works on it on this pull request's branch (task `{task.id}`)."
        )
        comment = Comment(installation_id=gh.installation_id, repo=task.repo, number=number, body=body)
        return [
            OutboxMessage(
                f"github:followup:{task.id}",
                "append",
                comment,
                idempotency_key=f"github:{task.id}:{event.seq}:followup",
            )
        ]
