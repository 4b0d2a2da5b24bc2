"""One delivery being handled: the common path from a GitHub request to a core :class:`Mention`.

Handlers (``triggers.py``) describe *what* an event means — a :class:`Target` (issue or pull
request) and a :class:`Trigger` (who asked, what they said). :meth:`Ingress.request` does the rest
the same way for every trigger: 👀 at once, the permission lookup (never ``author_association``),
an audit entry, the repository's ``.handoff.yml``, the commit for the check run, then the shared
command logic of ``core.handlers``; replies and reactions go out through the outbox.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from core.commands import Command, Ignore, Mention, Registry, Reply
from core.errors import InvalidTransition, NotFound
from core.handlers import CommandContext, handle
from core.links import GitHubLinks, PullRequestInfo, RepoSettings, ReviewComment, TaskLinks
from core.models import Task, TaskSource
from core.outbox import OutboxMessage, write_messages
from core.refs import get_ref
from core.states import TaskState
from github_app.operations import Comment, Reaction
from github_app.permissions import can_write
from github_app.services import PR_REF, GitHubServices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """The issue or pull request a request is about."""

    installation_id: int
    repo: str
    number: int
    is_pr: bool
    default_branch: str = "main"
    url: str = ""
    # Pull requests: head sha/ref, base ref, and the fork it comes from (if any).
    pr: PullRequestInfo | None = None

    @property
    def key(self) -> str:
        """The core target key: one active task per issue or pull request."""
        return f"github:{self.repo}#{self.number}"


@dataclass(frozen=True)
class Trigger:
    """Who asked for what, and where to acknowledge it."""

    author: str
    text: str
    kind: str
    source: TaskSource = TaskSource.github_comment
    comment_id: int | None = None
    # "issue" (conversation comment), "review" (line comment) or None (react on the issue itself).
    comment_kind: str | None = "issue"
    # A review comment: where in the diff it was made.
    review: ReviewComment | None = None
    untrusted: bool = False
    # Label/assignment: the issue text is the instructions, never parsed as a command.
    force_work: bool = False
    # A button press needs no 👀.
    acknowledge: bool = True


class Ingress:
    """Helpers for handling one delivery."""

    def __init__(self, services: GitHubServices, delivery_id: str) -> None:
        self.svc = services
        self.delivery_id = delivery_id
        self.task_id: str | None = None

    def commands(self, target: Target, trigger: Trigger) -> CommandContext:
        """The core command context; a ``work`` command gets the repository's settings first."""

        async def prepare(cmd: Command) -> Command | Reply:
            return await self._work(target, trigger, cmd)

        return CommandContext(tasks=self.svc.tasks, registry=self.svc.registry, prepare_work=prepare)

    # -- the common path ------------------------------------------------------------------------

    async def request(self, target: Target, trigger: Trigger) -> str:
        """Acknowledge, authorise and run one request; return the delivery's outcome."""
        if trigger.acknowledge:
            await self.react(target, trigger)
        role = await self.svc.permissions.role(target.installation_id, target.repo, trigger.author)
        writer = can_write(role)
        await self.svc.tasks.audit(
            trigger.author,
            "permission",
            "allowed" if writer else "denied",
            reason=f"role {role} on {target.repo}",
            data={"delivery": self.delivery_id, "trigger": trigger.kind, "target": target.key},
        )
        target_key, on_handoff_pr = await self.target_key(target)
        mention = Mention(
            source="github",
            author=trigger.author,
            text=trigger.text,
            delivery_id=self.delivery_id,
            target_key=target_key,
            repo=target.repo,
            can_write=writer,
            is_admin=role == "admin",
            review=trigger.review,
            on_handoff_pr=on_handoff_pr,
            untrusted=trigger.untrusted,
            verbatim=trigger.force_work,
            task_source=trigger.source.value,
        )
        result = await handle(mention, self.commands(target, trigger))
        if isinstance(result, Ignore):
            return f"ignored: {result.reason}"
        reply = result
        self.task_id = reply.task_id
        if await self._worth_replying(reply):
            await self.reply(target, trigger.author, reply.text)
        name = reply.command or "reply"
        return f"{name}: {'ok' if reply.ok else 'refused'}" + (f" ({reply.task_id})" if reply.task_id else "")

    async def _work(self, target: Target, trigger: Trigger, cmd: Command) -> Command | Reply:
        """A ``work`` command as it should run here — the repository's config, links and check-run
        commit applied — or why it may not."""
        svc = self.svc
        config = await svc.repo_configs.load(target.installation_id, target.repo, target.default_branch)
        options = dict(cmd.options)
        for name, allowed in (("agent", svc.server.agents), ("model", svc.server.models)):
            if name in options and allowed is not None and options[name] not in allowed:
                return Reply(f"`--{name} {options[name]}` is not allowed here.", ok=False)
        if config.agent and "agent" not in options:
            options["agent"] = config.agent
        if config.model and "model" not in options:
            options["model"] = config.model
        pr = target.pr
        if pr is not None and pr.fork and not svc.server.fork_pull_requests:
            return Reply(
                "This pull request comes from a fork. Working on it would push the fork's commits into "
                f"{target.repo} as a `handoff/` branch, where this repository's workflows run on them, so "
                "it is off here (`github.fork_pull_requests: true` in the server's handoff.yml turns it on).",
                ok=False,
            )
        if target.is_pr and "base" not in options:
            # Work on top of the pull request; a fork's head is only reachable as refs/pull/N/head.
            base = "" if pr is None else f"refs/pull/{target.number}/head" if pr.fork else pr.head_ref
            if base:
                options["base"] = base
        head_sha = (pr.head_sha if pr is not None else "") or await svc.api.branch_sha(
            target.installation_id, target.repo, target.default_branch
        )
        github = GitHubLinks(
            installation_id=target.installation_id,
            repo=target.repo,
            number=target.number,
            is_pr=target.is_pr,
            default_branch=target.default_branch,
            head_sha=head_sha,
            trigger=trigger.kind,
            comment_id=trigger.comment_id,
            comment_kind=trigger.comment_kind,
            pr=pr,
            config=RepoSettings.model_validate(
                config.model_dump(exclude={"notes", "trigger_label"}, exclude_none=True)
            ),
            config_notes=config.notes,
        )
        mention = replace(
            cmd.mention,
            links=TaskLinks(clone_url=svc.clone_url(target.repo), url=target.url, github=github),
            budget=dict(config.budget),
        )
        text = cmd.rest
        if trigger.review is not None:
            text = trigger.review.preamble() + text
        return Command(Registry.WORK, [text], mention, options)

    async def _worth_replying(self, reply: Reply) -> bool:
        """Say something unless the tracking comment already does (a task started or changed)."""
        if not reply.ok or reply.command is None:
            return True
        if reply.command in ("help", "status"):
            return True
        if reply.command != Registry.WORK or reply.task_id is None:
            return False
        task = await self.svc.tasks.get(reply.task_id)
        # A task this delivery created is announced by its tracking comment; a follow-up is not.
        return task.dedupe_key != f"github:{self.delivery_id}"

    async def target_key(self, target: Target) -> tuple[str, bool]:
        """The target key, and whether it is a Handoff pull request (then: its task's key)."""
        task = await self.handoff_pr_task(target) if target.is_pr else None
        if task is not None and task.target_key:
            return task.target_key, True
        return target.key, False

    async def handoff_pr_task(self, target: Target) -> Task | None:
        """The task whose pull request ``target`` is, if Handoff opened it."""
        pr = target.pr or PullRequestInfo()
        head = pr.head_ref
        # Only a head branch in the repository itself names a task: anyone can open a pull
        # request from a fork whose branch is called `handoff/<some task id>`.
        own = head.startswith("handoff/") and not pr.fork
        task_id = head.removeprefix("handoff/") if own else None
        if task_id is None:
            async with self.svc.sessions() as session:
                ref = await get_ref(session, PR_REF.format(repo=target.repo, number=target.number))
            task_id = ref.get("task_id") if ref else None
        if not task_id:
            return None
        try:
            task = await self.svc.tasks.get(task_id)
        except NotFound:
            return None
        if task.repo != target.repo or (own and task.branch not in (None, head)):
            return None
        return task

    # -- effects --------------------------------------------------------------------------------

    async def cancel(self, tasks: list[Task], actor: str, why: str) -> list[str]:
        """Cancel every task of ``tasks`` that has not ended; return their ids."""
        done: list[str] = []
        for task in tasks:
            if TaskState(task.state).terminal:
                continue
            try:
                await self.svc.tasks.cancel(task.id, actor=actor)
            except InvalidTransition:
                continue
            await self.svc.tasks.audit(actor, "cancel", "allowed", reason=why, task_id=task.id)
            done.append(task.id)
        return done

    async def react(self, target: Target, trigger: Trigger) -> None:
        """👀 on the triggering comment (or issue), sent through the outbox right away."""
        reaction = Reaction(
            installation_id=target.installation_id,
            repo=target.repo,
            number=target.number,
            comment_id=trigger.comment_id,
            comment_kind=(trigger.comment_kind if trigger.comment_id else None) or "issue_itself",
            content="eyes",
            ack=True,  # the first feedback: its own lane, ahead of other tasks' progress
        )
        await self.send(OutboxMessage(f"github:eyes:{self.delivery_id}", "append", reaction))

    async def reply(self, target: Target, author: str, text: str) -> None:
        """A conversation comment answering ``author`` (sent through the outbox)."""
        comment = Comment(
            installation_id=target.installation_id,
            repo=target.repo,
            number=target.number,
            body=f"@{author} {text}",
        )
        await self.send(OutboxMessage(f"github:reply:{self.delivery_id}", "append", comment))

    async def send(self, message: OutboxMessage) -> None:
        """Write one outbox row; its idempotency key makes a replayed delivery write nothing."""
        if message.idempotency_key is None:
            message = replace(message, idempotency_key=message.key)
        async with self.svc.sessions.begin() as session:
            await write_messages(session, [message], self.task_id, skip_duplicates=True)
