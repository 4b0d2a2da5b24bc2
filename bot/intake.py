"""Recorded Slack requests → core :class:`~core.commands.Mention` s → tasks, in the ``slack_ingest`` job.

The endpoint (:mod:`bot.ingress`) recorded the request and queued the job; :meth:`Intake.handle`
runs in the worker: it reads the text as the person wrote it (:mod:`bot.text`), decides who may do
what, and runs the shared command logic of :mod:`core.handlers` — new work through
:class:`~bot.starting.Starter`. Everything the person sees goes through the outbox: a slash
command's answer through its ``response_url``, a mention's in its thread, a new task's status
message from the reporter.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot import answers, messages
from bot.access import Access
from bot.answers import SILENT, TASK_ID, Answer, strip_mention
from bot.config import SlackConfig
from bot.requests import bot_user_of
from bot.starting import Starter, help_answer
from bot.store import Store
from bot.text import mentioned_users, to_plain
from bot.workspaces import Workspaces
from core.commands import Command, Ignore, Mention, Registry
from core.handlers import CommandContext, handle
from core.links import SlackLinks, TaskLinks
from core.models import Task, TaskSource
from core.tasks import TaskService

log = logging.getLogger(__name__)

# Display names of Slack user ids (``users.info``), for mentions in a request's text.
NameLookup = Callable[[set[str]], Awaitable[dict[str, str]]]


class Intake:
    """The shared handling behind every kind of Slack request."""

    def __init__(
        self,
        config: SlackConfig,
        tasks: TaskService,
        store: Store,
        access: Access,
        registry: Registry,
        starter: Starter,
        workspaces: Workspaces,
        *,
        names: NameLookup | None = None,
    ) -> None:
        self.config = config
        self.tasks = tasks
        self.store = store
        self.access = access
        self.registry = registry
        self.starter = starter
        self.names = names
        self.workspaces = workspaces

    async def plain(self, text: str) -> str:
        """Slack's escaped text with markup → what the person wrote (:mod:`bot.text`)."""
        users = mentioned_users(text)
        names = await self.names(users) if users and self.names is not None else {}
        return to_plain(text, names).strip()

    # -- entry points ---------------------------------------------------------------------------

    async def handle(self, delivery: str, event: str, payload: dict[str, Any]) -> Answer:
        """Handle one recorded request (``event`` as :mod:`bot.requests` named it)."""
        if event == "slash_command":
            return await self.slash(payload, delivery)
        if event == "block_actions":
            return await self.action(payload, delivery)
        inner: dict[str, Any] = payload.get("event") or {}
        bot_user = bot_user_of(payload) or (await self.workspaces.identity(payload.get("team_id"))).user_id
        if event == "app_mention":
            return await self._addressed(inner, delivery, bot_user, dm=False)
        if event == "message.im":
            return await self._addressed(inner, delivery, bot_user, dm=True)
        if event == "thread_reply":
            task = await self._thread_task(str(inner.get("channel", "")), str(inner.get("thread_ts", "")))
            if task is None:
                return Answer(outcome="ignored: not a task's thread")
            text = await self.plain(str(inner.get("text", "")))
            return await self._in_thread(task, inner, delivery, text)
        return Answer(outcome=f"ignored: {event}")

    async def slash(self, body: dict[str, Any], delivery: str) -> Answer:
        """``/handoff ...``: answered through the command's ``response_url`` (ephemeral).

        A new task needs no answer there: the acknowledgement said its status follows, and its
        status message in the channel is that answer."""
        answer = await self._slash(body, delivery)
        if answer.text:
            await self.respond(body, answer)
        return answer

    async def action(self, body: dict[str, Any], delivery: str) -> Answer:
        """A Cancel or Retry button on a status message; answered through its ``response_url``."""
        action = (body.get("actions") or [{}])[0]
        user = str((body.get("user") or {}).get("id", ""))
        channel = str(
            (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
        )
        task = await self.store.task(str(action.get("value", "")))
        if task is None:
            answer = Answer("That task no longer exists.", outcome="unknown task")
        else:
            command = "cancel" if action.get("action_id") == messages.CANCEL else "retry"
            answer = await self._steer(task, user, channel, command, delivery)
        if answer.text and body.get("response_url"):
            await self.respond(body, answer)
        return answer

    async def respond(self, body: dict[str, Any], answer: Answer) -> None:
        """Answer a slash command or a button through its ``response_url`` (a DM once expired)."""
        if answer.text:
            await self.store.send([answers.via_response_url(body, answer)], answer.task_id)

    # -- slash commands -------------------------------------------------------------------------

    async def _slash(self, body: dict[str, Any], delivery: str) -> Answer:
        user, channel = str(body.get("user_id", "")), str(body.get("channel_id", ""))
        text = await self.plain(str(body.get("text") or ""))
        words = text.split()
        head = words[0].lower() if words else ""
        if head in ("", "help"):
            return help_answer(self.registry, self.config.command)
        spec = self.registry.find(head, "slack")
        if spec is not None and not spec.on_task and head != Registry.WORK:
            return await self._command(user, channel, text, delivery)
        if head == "status" and len(words) == 1:
            return await self._my_tasks(user)
        if head in self.registry.on_task("slack") and len(words) <= 2:
            task = await self.store.task(words[1]) if len(words) == 2 and TASK_ID.match(words[1]) else None
            if task is None:
                return Answer(
                    f"Say it in the task's thread, or name the task: `{self.config.command} {head} t_…`.",
                    outcome="no task named",
                )
            return await self._steer(task, user, channel, head, delivery)
        repo, instructions = await self.starter.repo_and_text(text, channel, user, trailing=False)
        where = SlackLinks(team=body.get("team_id"), channel=channel, user=user, kind="command")
        answer = await self.starter.start(
            user, channel, repo, instructions, delivery, f"slack:{channel}:{delivery}", where
        )
        if await self._created(answer, delivery):
            return Answer(None, answer.task_id, answer.outcome)  # its status message is the answer
        return answer

    async def _created(self, answer: Answer, delivery: str) -> bool:
        """Whether ``answer`` is about a task this delivery created."""
        task = await self.store.task(answer.task_id) if answer.task_id else None
        return task is not None and task.dedupe_key == f"slack:{delivery}"

    async def _my_tasks(self, user: str) -> Answer:
        tasks = await self.store.running_tasks(self.access.identity(user))
        return Answer(messages.task_list(tasks), outcome="listed tasks")

    async def _command(self, user: str, channel: str, text: str, delivery: str) -> Answer:
        """A command of the registry that needs no task (``bind``, ``unbind``)."""
        mention = Mention(
            source="slack",
            author=self.access.identity(user),
            text=text,
            delivery_id=delivery,
            channel=channel,
            is_admin=self.access.is_admin(user),
            task_source=TaskSource.slack.value,
        )
        reply = await handle(mention, CommandContext(self.tasks, self.registry))
        return SILENT if isinstance(reply, Ignore) else answers.from_reply(reply)

    # -- mentions and DMs -----------------------------------------------------------------------

    async def _addressed(
        self, event: dict[str, Any], delivery: str, bot_user_id: str | None, *, dm: bool
    ) -> Answer:
        """A mention or a DM: in a task's thread it steers that task, otherwise it starts one."""
        user, channel, ts = (
            str(event.get("user", "")),
            str(event.get("channel", "")),
            str(event.get("ts", "")),
        )
        thread = str(event.get("thread_ts") or ts)
        text = await self.plain(strip_mention(str(event.get("text", "")), bot_user_id))
        if thread != ts:
            task = await self._thread_task(channel, thread)
            if task is not None:
                return await self._in_thread(task, event, delivery, text)
        words = text.split()
        if not words or words[0].lower() == "help":
            answer = help_answer(self.registry, self.config.command)
        elif words[0].lower() == "status" and len(words) == 1:
            answer = await self._my_tasks(user)
        else:
            repo, instructions = await self.starter.repo_and_text(
                text, None if dm else channel, user, trailing=True
            )
            where = SlackLinks(
                team=event.get("team"),
                channel=channel,
                thread_ts=thread,
                message_ts=ts,
                user=user,
                kind="dm" if dm else "mention",
            )
            answer = await self.starter.start(
                user, channel, repo, instructions, delivery, f"slack:{channel}:{thread}", where
            )
            if await self._created(answer, delivery):
                # A new task: its status message in the thread is the answer; 👀 says we saw it.
                await self.store.send([answers.reaction(channel, ts, "eyes", delivery)], answer.task_id)
                return answer
        if dm:  # a DM is private already: answer in the open there
            answer = Answer(answer.text, answer.task_id, answer.outcome, public=True)
        await self.store.send([answers.in_thread(event, delivery, answer)], answer.task_id)
        return answer

    # -- existing tasks -------------------------------------------------------------------------

    async def _thread_task(self, channel: str, thread_ts: str) -> Task | None:
        task_id = await self.store.thread_task(channel, thread_ts)
        return await self.store.task(task_id) if task_id is not None else None

    async def _in_thread(self, task: Task, event: dict[str, Any], delivery: str, text: str) -> Answer:
        user, channel = str(event.get("user", "")), str(event.get("channel", ""))
        answer = await self._steer(task, user, channel, text, delivery)
        if answer.text:
            await self.store.send([answers.in_thread(event, delivery, answer)], answer.task_id)
        return answer

    async def _steer(self, task: Task, user: str, channel: str, text: str, delivery: str) -> Answer:
        """A command or follow-up on an existing task, with the allow-list deciding write access."""
        actor = self.access.identity(user)
        if not task.target_key:
            return Answer("This task can only be steered where it was started.", task.id, "no target")
        decision = await self.access.may_start(user, channel, task.repo)
        mention = Mention(
            source="slack",
            author=actor,
            text=text,
            delivery_id=delivery,
            target_key=task.target_key,
            repo=task.repo,
            can_write=decision.allowed,
            is_admin=self.access.is_admin(user),
            channel=channel,
            links=TaskLinks.of(task),
            context={"slack_user": user, "channel": channel},
            task_source=TaskSource.slack.value,
        )
        parsed = self.registry.parse(mention)
        if isinstance(parsed, Command) and parsed.name == Registry.WORK and not decision.allowed:
            # Core would hold an outsider's follow-up for approval; in Slack the allow-list decides.
            await self.tasks.audit(
                actor,
                "slack:follow_up",
                "denied",
                reason=decision.reason,
                task_id=task.id,
                data={"channel": channel},
            )
            return Answer(f"Sorry, {decision.reason}.", task.id, outcome="not allowed")
        reply = await handle(mention, CommandContext(self.tasks, self.registry))
        if isinstance(reply, Ignore):
            return SILENT
        if not reply.ok and reply.task_id is not None:
            # Core audits refusals that name no task; this one (e.g. an outsider's Cancel) names one.
            name = parsed.name if isinstance(parsed, Command) else "command"
            await self.tasks.audit(
                actor,
                f"slack:{name}",
                "refused",
                reason=reply.text,
                task_id=task.id,
                data={"channel": channel},
            )
        return answers.from_reply(reply)
