"""Turns task events into Slack outbox messages (pure: the journal calls it inside its transaction).

Per task with a Slack home (started in Slack, or announced in the channel bound to its repository):

* one ``upsert`` of the **status message** (key ``slack:status:<task>``) for each state change,
  step, result, question or error — and for every 25th log line, so "latest output" stays alive
  without one row per line. Pending upserts coalesce, and the notifier renders the message from
  the database when it sends, so coalescing loses nothing;
* ``append`` **thread replies** for milestones only: started, a question, pull request opened,
  finished or failed (a failure is also broadcast to the channel), plus a reaction on the message
  that asked, when there is one.
"""

from __future__ import annotations

from collections.abc import Callable

from bot import messages
from bot.operations import CHANNEL, React, Status, ThreadReply
from core.links import FollowUpNotice, SlackLinks
from core.models import EventType, RunEvent, Task, TaskSource
from core.outbox import OutboxMessage, is_first
from core.states import TaskState

STATUS_TYPES = frozenset(
    {
        EventType.status.value,
        EventType.progress.value,
        EventType.result.value,
        EventType.question.value,
        EventType.error.value,
    }
)
LOG_EVERY = 25
LOG_TAIL_ON_FAILURE = 20


def status_key(task_id: str) -> str:
    """The outbox key (and remembered reference) of a task's status message."""
    return f"slack:status:{task_id}"


class SlackReporter:
    """A :class:`core.outbox.Reporter` for Slack."""

    channel = CHANNEL

    def __init__(self, announce_channel: Callable[[str], str | None] | None = None) -> None:
        # repo -> channel to announce tasks started elsewhere in (``None``: announcements off).
        self.announce_channel = announce_channel

    def home(self, task: Task) -> SlackLinks | None:
        """Where the task's thread lives: its Slack origin, or an announcement channel."""
        slack = SlackLinks.of(task)
        if slack is not None and slack.channel:
            return slack
        if task.source != TaskSource.slack.value and self.announce_channel is not None:
            channel = self.announce_channel(task.repo)
            if channel:
                return SlackLinks(channel=channel, thread_ts=None, kind="announce")
        return None

    def messages(self, task: Task, event: RunEvent) -> list[OutboxMessage]:
        """The outbox messages ``event`` causes (none for tasks without a Slack home)."""
        home = self.home(task)
        if home is None:
            return []
        out: list[OutboxMessage] = []
        if event.type in STATUS_TYPES or (event.type == EventType.log.value and event.seq % LOG_EVERY == 0):
            status = Status(
                task_id=task.id,
                channel=home.channel,
                thread_ts=home.thread_ts,
                user=home.user,
                seq=event.seq,
                # The status message's first post acknowledges the request.
                ack=is_first(event),
            )
            out.append(OutboxMessage(status_key(task.id), "upsert", status))
        if event.type == EventType.question.value:
            out.append(self._reply(task, event, home, "question", messages.question(event.data)))
        elif event.type == EventType.status.value:
            notice = FollowUpNotice.of(event.data)
            if notice is not None and notice.source != "slack":
                # Asked elsewhere (a review comment on its pull request): the thread hears of it too.
                text = messages.follow_up_elsewhere(notice.author, notice.source, notice.text)
                out.append(self._reply(task, event, home, "followup", text))
            out.extend(self._milestones(task, event, home))
        return out

    def _milestones(self, task: Task, event: RunEvent, home: SlackLinks) -> list[OutboxMessage]:
        data = event.data
        try:
            state = TaskState(data.get("state", ""))
        except ValueError:
            return []
        if state is TaskState.running and data.get("from") is not None:
            attempt = int(data.get("attempt") or task.attempts or 1)
            return [self._reply(task, event, home, "started", messages.started(attempt))]
        if not state.terminal or data.get("from") is None:
            return []
        out: list[OutboxMessage] = []
        pr_url = data.get("pr_url")
        if isinstance(pr_url, str) and pr_url:
            first = int(data.get("attempt") or 1) == 1
            out.append(self._reply(task, event, home, "pr", messages.pull_request(pr_url, first)))
        failed = state in messages.FAILED
        out.append(
            self._reply(
                task,
                event,
                home,
                "finished",
                messages.finished(task, data),
                broadcast=failed,
                log_tail=LOG_TAIL_ON_FAILURE if failed else 0,
            )
        )
        if home.message_ts:
            name = "white_check_mark" if state is TaskState.succeeded else "x"
            out.append(
                OutboxMessage(
                    f"slack:react:{task.id}",
                    "append",
                    React(channel=home.channel, ts=home.message_ts, name=name),
                    idempotency_key=f"slack:{task.id}:{event.seq}:react",
                )
            )
        return out

    def _reply(
        self,
        task: Task,
        event: RunEvent,
        home: SlackLinks,
        what: str,
        text: str,
        *,
        broadcast: bool = False,
        log_tail: int = 0,
    ) -> OutboxMessage:
        reply = ThreadReply(
            task_id=task.id,
            channel=home.channel,
            thread_ts=home.thread_ts,
            text=text,
            broadcast=broadcast,
            log_tail=log_tail,
            # Milestones go under the status message, which must head the thread.
            after_status=True,
        )
        return OutboxMessage(
            f"slack:reply:{task.id}", "append", reply, idempotency_key=f"slack:{task.id}:{event.seq}:{what}"
        )
