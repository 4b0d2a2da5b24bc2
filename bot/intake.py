"""Slack requests → core :class:`~core.commands.Mention` s → tasks, with the allow-list applied.

Each entry point (slash command, mention, DM, thread reply, button) claims its delivery first
(``Delivery`` row; a retry is then a no-op), decides who may do what, and runs the shared command
logic of :mod:`core.handlers`. The work is a few short database writes and one enqueue, done
before the acknowledgement; everything the person sees later goes through the outbox.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot import answers, messages
from bot.access import Access, is_repo_name, repo_matches
from bot.answers import SILENT, TASK_ID, Answer, split_repo, strip_mention
from bot.config import SlackConfig
from bot.store import Store
from bot.text import mentioned_users, to_plain
from core.commands import Command, Ignore, Mention, Registry
from core.handlers import CommandContext, handle
from core.links import SlackLinks, TaskLinks
from core.models import Task, TaskSource
from core.settings import Settings
from core.tasks import TaskService

log = logging.getLogger(__name__)

# Display names of Slack user ids (``users.info``), for mentions in a request's text.
NameLookup = Callable[[set[str]], Awaitable[dict[str, str]]]


class Intake:
    """The shared handling behind every Slack listener."""

    def __init__(
        self,
        settings: Settings,
        config: SlackConfig,
        tasks: TaskService,
        store: Store,
        access: Access,
        registry: Registry,
        names: NameLookup | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.tasks = tasks
        self.store = store
        self.access = access
        self.registry = registry
        self.names = names

    async def plain(self, text: str) -> str:
        """Slack's escaped text with markup → what the person wrote (:mod:`bot.text`)."""
        users = mentioned_users(text)
        names = await self.names(users) if users and self.names is not None else {}
        return to_plain(text, names).strip()

    # -- entry points ---------------------------------------------------------------------------

    async def slash(self, body: dict[str, Any]) -> Answer:
        """``/handoff ...``: the answer goes into the acknowledgement (ephemeral)."""
        trigger = body.get("trigger_id") or f"{body.get('user_id')}:{time.time()}"
        delivery = f"cmd:{trigger}"
        return await self._once(delivery, "slash_command", lambda: self._slash(body, delivery))

    async def mention(self, body: dict[str, Any], bot_user_id: str | None) -> Answer:
        """``@Handoff ...`` in a channel (in a task's thread: a command or a follow-up)."""
        event = body.get("event") or {}
        delivery = f"ev:{body.get('event_id') or event.get('event_ts')}"
        return await self._once(
            delivery, "app_mention", lambda: self._addressed(event, delivery, bot_user_id, dm=False)
        )

    async def message(self, body: dict[str, Any], bot_user_id: str | None) -> Answer:
        """A DM to the bot, or a reply in a task's thread; any other message is ignored unclaimed."""
        event = body.get("event") or {}
        if event.get("subtype") or event.get("bot_id") or not event.get("user"):
            return SILENT  # edits, joins, bot posts (our own included)
        channel, ts, thread = str(event.get("channel", "")), str(event.get("ts", "")), event.get("thread_ts")
        delivery = f"ev:{body.get('event_id') or event.get('event_ts')}"
        if event.get("channel_type") == "im":
            return await self._once(
                delivery, "message.im", lambda: self._addressed(event, delivery, bot_user_id, dm=True)
            )
        if not thread or thread == ts:
            return SILENT  # a channel message outside a thread is not for us
        if bot_user_id and f"<@{bot_user_id}" in str(event.get("text", "")):
            return SILENT  # the app_mention event for this message handles it
        task = await self._thread_task(channel, str(thread))
        if task is None:
            return SILENT
        text = await self.plain(str(event.get("text", "")))
        return await self._once(
            delivery, "thread_reply", lambda: self._in_thread(task, event, delivery, text)
        )

    async def action(self, body: dict[str, Any]) -> Answer:
        """A button on a status message; the answer goes to the ``response_url`` (ephemeral)."""
        action = (body.get("actions") or [{}])[0]
        if action.get("action_id") not in (messages.CANCEL, messages.RETRY):
            return SILENT  # link buttons: Slack opens the page, there is nothing to do
        delivery = f"act:{body.get('trigger_id') or action.get('action_ts')}"
        return await self._once(delivery, "block_actions", lambda: self._action(body, action, delivery))

    async def respond(self, body: dict[str, Any], answer: Answer) -> None:
        """Answer a slash command or a button through its ``response_url`` (a DM once expired)."""
        if answer.text:
            await self.store.send([answers.via_response_url(body, answer)], answer.task_id)

    async def _once(self, delivery: str, event: str, work: Callable[[], Awaitable[Answer]]) -> Answer:
        if not await self.store.claim(delivery, event):
            log.info("slack delivery %s already handled; ignoring the repeat", delivery)
            return SILENT
        try:
            answer = await work()
        except Exception:
            await self.store.release(delivery)  # let Slack's retry (or the person) try again
            raise
        await self.store.settle(delivery, answer.outcome, answer.task_id)
        return answer

    # -- slash commands -------------------------------------------------------------------------

    async def _slash(self, body: dict[str, Any], delivery: str) -> Answer:
        user, channel = str(body.get("user_id", "")), str(body.get("channel_id", ""))
        text = await self.plain(str(body.get("text") or ""))
        words = text.split()
        head = words[0].lower() if words else ""
        if head in ("", "help"):
            return self._help()
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
        repo, instructions = await self._repo_and_text(text, channel, user, trailing=False)
        where = SlackLinks(team=body.get("team_id"), channel=channel, user=user, kind="command")
        answer = await self._start(
            user, channel, repo, instructions, delivery, f"slack:{channel}:{delivery}", where
        )
        if answer.public:
            return Answer(f"{answer.text} Updates follow in this channel.", answer.task_id, answer.outcome)
        return answer

    def _help(self) -> Answer:
        return Answer(
            messages.help_text(self.registry.help_for("slack"), self.config.command), outcome="help"
        )

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

    # -- new tasks ------------------------------------------------------------------------------

    async def _repo_and_text(
        self, text: str, channel: str | None, user: str, *, trailing: bool
    ) -> tuple[str | None, str]:
        repo, rest = split_repo(text, trailing=trailing)
        bound = await self.access.bound_repo(channel) if channel else None
        if repo is not None and bound is not None and not self._known_repo(repo):
            # In a bound channel "src/app.py fix it" is an instruction, not a repository.
            return bound, text.strip()
        if repo is None and bound is None and channel is None:
            own = self.access.own_repos(user)
            if len(own) == 1:  # a DM from someone allowed on exactly one repository
                return own[0], rest
        return repo or bound, rest

    def _known_repo(self, repo: str) -> bool:
        patterns = [p for rule in self.config.allow for p in rule.repos if p != "*"]
        patterns += list(self.config.channels.values())
        return any(repo_matches(p, repo) for p in patterns)

    async def _start(
        self,
        user: str,
        channel: str,
        repo: str | None,
        instructions: str,
        delivery: str,
        target: str,
        where: SlackLinks,
    ) -> Answer:
        actor = self.access.identity(user)
        audit = {"slack_user": user, "channel": channel, "repo": repo}
        if repo is None:
            if where.kind == "dm":
                reason = "no repository named: start with `owner/repo` or end with `in owner/repo`"
            else:
                reason = (
                    "this channel is not bound to a repository. Say "
                    f"`{self.config.command} owner/repo <what to do>`, or ask an admin to run "
                    f"`{self.config.command} bind owner/repo` here"
                )
            await self.tasks.audit(actor, "slack:work", "refused", reason=reason, data=audit)
            return Answer(f"Which repository? {reason[0].upper()}{reason[1:]}.", outcome="no repository")
        if not instructions.strip():
            return self._help()
        decision = await self.access.may_start(user, channel, repo)
        if not decision.allowed:
            await self.tasks.audit(actor, "slack:work", "denied", reason=decision.reason, data=audit)
            return Answer(f"Sorry, {decision.reason}.", outcome="not allowed")
        mention = Mention(
            source="slack",
            author=actor,
            text=instructions,
            delivery_id=delivery,
            target_key=target,
            repo=repo,
            can_write=True,
            is_admin=self.access.is_admin(user),
            channel=channel,
            links=self._links(where.model_copy(update={"allowed_because": decision.reason}), repo),
            context={"slack_user": user, "allowed_because": decision.reason},
            task_source=TaskSource.slack.value,
        )
        reply = await handle(mention, CommandContext(self.tasks, self.registry))
        if isinstance(reply, Ignore):
            return SILENT
        if reply.task_id and where.thread_ts:
            await self.store.index_thread(channel, where.thread_ts, reply.task_id)
        return answers.from_reply(reply)

    def _links(self, slack: SlackLinks, repo: str) -> TaskLinks:
        if not is_repo_name(repo):
            return TaskLinks(slack=slack)  # a path or URL from a config binding is cloned as it is
        return TaskLinks(slack=slack, clone_url=f"{self.settings.github_git_url.rstrip('/')}/{repo}.git")

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
            answer = self._help()
        elif words[0].lower() == "status" and len(words) == 1:
            answer = await self._my_tasks(user)
        else:
            repo, instructions = await self._repo_and_text(text, None if dm else channel, user, trailing=True)
            where = SlackLinks(
                team=event.get("team"),
                channel=channel,
                thread_ts=thread,
                message_ts=ts,
                user=user,
                kind="dm" if dm else "mention",
            )
            answer = await self._start(
                user, channel, repo, instructions, delivery, f"slack:{channel}:{thread}", where
            )
            task = await self.store.task(answer.task_id) if answer.task_id else None
            if task is not None and task.dedupe_key == f"slack:{delivery}":
                # A new task: its status message in the thread is the answer; 👀 says we saw it.
                await self.store.send([answers.reaction(channel, ts, "eyes", delivery)], task.id)
                return answer
        if dm:  # a DM is private already: answer in the open there
            answer = Answer(answer.text, answer.task_id, answer.outcome, public=True)
        await self.store.send([answers.in_thread(event, delivery, answer)], answer.task_id)
        return answer

    # -- existing tasks -------------------------------------------------------------------------

    async def _thread_task(self, channel: str, thread_ts: str) -> Task | None:
        task_id = await self.store.thread_task(channel, thread_ts)
        if task_id is not None:
            return await self.store.task(task_id)
        return await self.tasks.for_target(f"slack:{channel}:{thread_ts}")

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

    async def _action(self, body: dict[str, Any], action: dict[str, Any], delivery: str) -> Answer:
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
