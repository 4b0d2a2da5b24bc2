"""Starting a task from Slack: which repository, whether this person may, and the task's links.

The repository comes from the text (``owner/repo …`` or ``… in owner/repo``), else the channel's
binding, else — in a DM — the one repository the person is listed for. The allow-list decides
who may start work; every refusal says why and is audited.

A repository of a code host Handoff is an App on (GitHub) makes the task a GitHub task too: it is
resolved to the App's installation (a repository without one gets the install link), and the task
carries both homes — its Slack thread and :class:`GitHubLinks` — so the worker clones and pushes
with a token minted for that repository and opens the draft pull request.
"""

from __future__ import annotations

from collections.abc import Callable

from bot import answers, messages
from bot.access import Access, is_repo_name, repo_matches
from bot.answers import SILENT, Answer, split_repo
from bot.config import SlackConfig
from bot.store import Store
from bot.workspaces import Workspaces
from core.commands import Ignore, Mention, Registry
from core.errors import HostUnavailable
from core.handlers import CommandContext, handle
from core.links import GitHubLinks, SlackLinks, TaskLinks
from core.models import TaskSource
from core.ports import HostedRepo, RepositoryHost
from core.settings import Settings
from core.tasks import TaskService

# The code hosts Handoff is an App on (GitHub's integration), looked up when a task starts.
Hosts = Callable[[], list[RepositoryHost]]


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
        workspaces: Workspaces,
        hosts: Hosts | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.tasks = tasks
        self.store = store
        self.access = access
        self.registry = registry
        self.workspaces = workspaces
        self.hosts = hosts or (lambda: [])

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
        host = next((h for h in self.hosts() if h.hosts(repo)), None)
        hosted: HostedRepo | None = None
        if host is not None:
            try:
                hosted = await host.find(repo)
            except HostUnavailable as exc:
                return Answer(
                    f"{exc.service} is not answering right now, so nothing was started; please try again "
                    "in a minute.",
                    outcome=f"refused: {exc}"[:255],
                )
            if hosted is None:
                reason = f"Handoff's GitHub App is not installed on `{repo}` (or there is no such repository)"
                await self.tasks.audit(actor, "slack:work", "refused", reason=reason, data=audit)
                return Answer(
                    f"Sorry, {reason}. Someone who administers it can <{host.install_url(repo)}|install the App> "
                    "and pick the repository; then ask again.",
                    outcome="not installed",
                )
            repo = hosted.repo  # as the host spells it
        if where.thread_ts and not where.thread_url:
            identity = await self.workspaces.identity(where.team)
            where = where.model_copy(
                update={"thread_url": identity.thread_url(where.channel, where.thread_ts)}
            )
        where = where.model_copy(update={"allowed_because": decision.reason})
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
            links=self._links(where, repo, hosted),
            context={"slack_user": user, "allowed_because": decision.reason},
            task_source=TaskSource.slack.value,
        )
        reply = await handle(mention, CommandContext(self.tasks, self.registry))
        if isinstance(reply, Ignore):
            return SILENT
        if reply.task_id and where.thread_ts:
            await self.store.index_thread(channel, where.thread_ts, reply.task_id)
        return answers.from_reply(reply)

    def _links(self, slack: SlackLinks, repo: str, hosted: HostedRepo | None) -> TaskLinks:
        if hosted is not None:
            # Both homes: the thread it was asked in, and the repository's installation (its
            # clone token, its pull request, review comments on it continuing this task).
            github = GitHubLinks(
                installation_id=hosted.installation_id,
                repo=hosted.repo,
                default_branch=hosted.default_branch,
                trigger="slack",
            )
            return TaskLinks(slack=slack, github=github, clone_url=hosted.clone_url)
        if not is_repo_name(repo):
            return TaskLinks(slack=slack)  # a path or URL from a config binding is cloned as it is
        return TaskLinks(slack=slack, clone_url=f"{self.settings.github_git_url.rstrip('/')}/{repo}.git")


def help_answer(registry: Registry, command: str) -> Answer:
    """The help: the shared registry's commands, then Slack's other ways in."""
    return Answer(messages.help_text(registry.help_for("slack"), command), outcome="help")
