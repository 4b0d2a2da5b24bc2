"""The review reporter: what a review task's events change on GitHub.

Pure, like the GitHub reporter (called in the transaction that stores each event). A review task
has no tracking comment and no "Handoff" check run; instead each state change refreshes its
"Handoff review" check run on the reviewed commit and the pull request's summary comment for the
rule (one key per pull request and rule, so a newer review's rows take over), and the end of a
successful run posts its findings — only the orchestrator's ``status`` events count, never
anything the agent printed.
"""

from __future__ import annotations

from core.links import AutomationLinks, GitHubLinks
from core.models import EventType, RunEvent, Task
from core.outbox import OutboxMessage, is_first
from github_app.operations import CHANNEL, ReviewCheck, ReviewPost, ReviewSummary


def summary_key(repo: str, number: int, rule: str) -> str:
    """The outbox key (and hidden marker) of a pull request's summary comment for ``rule``."""
    return f"github:review-summary:{repo}#{number}:{rule}"


def is_review(task: Task) -> bool:
    """Whether ``task`` is a review-mode automation task (it reports here, not as a task)."""
    automation = AutomationLinks.of(task)
    return automation is not None and automation.mode == "review"


class ReviewReporter:
    """Turns a review task's state changes into its check run, summary and review."""

    channel = CHANNEL

    def messages(self, task: Task, event: RunEvent) -> list[OutboxMessage]:
        """The writes ``event`` causes (nothing for tasks that are not reviews)."""
        if event.type != EventType.status.value:
            return []
        automation = AutomationLinks.of(task)
        gh = GitHubLinks.of(task)
        if automation is None or automation.mode != "review" or gh is None or gh.number is None:
            return []
        where = {"installation_id": gh.installation_id, "repo": task.repo}
        sha = automation.head_sha or gh.head_sha or ""
        check = ReviewCheck(task_id=task.id, head_sha=sha, seq=event.seq, ack=is_first(event), **where)
        summary = ReviewSummary(
            task_id=task.id, number=gh.number, rule=automation.rule, seq=event.seq, **where
        )
        messages = [
            OutboxMessage(f"github:review-check:{task.id}", "upsert", check),
            OutboxMessage(
                f"github:review-summary:{task.repo}#{gh.number}:{automation.rule}", "upsert", summary
            ),
        ]
        if event.data.get("state") == "succeeded" and event.run_id:
            key = f"github:review-post:{task.id}:{event.run_id}"
            post = ReviewPost(
                task_id=task.id, run_id=event.run_id, number=gh.number, rule=automation.rule, **where
            )
            messages.append(OutboxMessage(key, "append", post, idempotency_key=key))
        return messages
