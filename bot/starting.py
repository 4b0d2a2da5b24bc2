"""Starting a task from Slack: which repository, whether this person may, and the task's links.

The repository comes from the text (``owner/repo …`` or ``… in owner/repo``), else the channel's
binding, else — in a DM — the one repository the person is listed for. The allow-list decides
who may start work; every refusal says why and is audited.
"""

from __future__ import annotations

from bot import answers, messages
from bot.access import Access, is_repo_name, repo_matches
from bot.answers import SILENT, Answer, split_repo
from bot.config import SlackConfig
from bot.store import Store
from core.commands import Ignore, Mention, Registry
from core.handlers import CommandContext, handle
from core.links import SlackLinks, TaskLinks
from core.models import TaskSource
from core.settings import Settings
from core.tasks import TaskService


class Starter:
    """Turns a request for new work into a task (or a refusal with its reason)."""

    def __init__(
        self,
        settings: Settings,
        config: SlackConfig,
        tasks: TaskService,
        store: Store,
        access: Access,
        registry: Registry,
    ) -> None:
        self.settings = settings
        self.config = config
        self.tasks = tasks
        self.store = store
        self.access = access
        self.registry = registry

    async def repo_and_text(
        self, text: str, channel: str | None, user: str, *, trailing: bool
    ) -> tuple[str | None, str]:
        """The repository the request is about and the instructions without it."""
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

    async def start(
        self,
        user: str,
        channel: str,
        repo: str | None,
        instructions: str,
        delivery: str,
        target: str,
        where: SlackLinks,
    ) -> Answer:
        """Create the task, or say why not; ``Answer.task_id`` names the task either way."""
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
            return help_answer(self.registry, self.config.command)
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


def help_answer(registry: Registry, command: str) -> Answer:
    """The help: the shared registry's commands, then Slack's other ways in."""
    return Answer(messages.help_text(registry.help_for("slack"), command), outcome="help")
