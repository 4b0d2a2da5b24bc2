"""The built-in commands, shared by GitHub and Slack: work, help, status, cancel, retry, approve.

Ingress code normalises its event into a :class:`~core.commands.Mention` (deciding ``can_write``
through the platform: GitHub's permission API, Slack's allow-list) and calls :func:`handle`. The
reply says what happened, in words that suit both platforms.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from core.commands import Command, Ignore, Mention, Registry, Reply, Who, allowed
from core.errors import InvalidTransition, NotFound
from core.links import FollowUpContext, TaskLinks
from core.models import Task, TaskSource
from core.scheduling import WAIT_QUESTION
from core.states import TaskState
from core.tasks import NewTask, TaskService

# A platform's last word on a ``work`` command before it runs: the command as it should run (the
# repository's settings, links, options applied) or a refusal.
PrepareWork = Callable[[Command], Awaitable[Command | Reply]]


@dataclass
class CommandContext:
    """What command handlers may use."""

    tasks: TaskService
    registry: Registry
    prepare_work: PrepareWork | None = None


def _first_line(text: str, limit: int = 80) -> str:
    line = (text.strip().splitlines() or [""])[0].strip()
    return f"“{line[:limit]}{'…' if len(line) > limit else ''}”"


def _describe(task: Task) -> str:
    state = task.state.replace("_", " ")
    text = f"Task `{task.id}` is *{state}*"
    if task.state_reason:
        text += f": {task.state_reason}"
    if task.pr_url:
        text += f" — pull request: {task.pr_url}"
    return text + "."


async def _task_for(cmd: Command, ctx: CommandContext) -> Task | None:
    key = cmd.mention.target_key
    return await ctx.tasks.for_target(key) if key else None


def build_registry() -> Registry:
    """The registry with every built-in command."""
    registry = Registry()

    @registry.command(
        Registry.WORK,
        usage="/handoff <what to do>",
        description="Start a task from your instructions; in a task's thread or pull request, a follow-up on it.",
        who_can_use=Who.writers,
        examples=(
            "/handoff fix the failing date parsing test",
            "/handoff --model gpt-4.1 add type hints to utils.py",
        ),
        audits_itself=True,  # the task service records what it creates
    )
    async def work(cmd: Command, ctx: CommandContext) -> Reply:
        mention = cmd.mention
        text = cmd.rest.strip()
        already = await ctx.tasks.by_dedupe(f"{mention.source}:{mention.delivery_id}")
        if already is not None:
            return Reply(f"Already on it: task `{already.id}`.", already.id)
        existing = await _task_for(cmd, ctx)
        follow_up = existing is not None and (
            not TaskState(existing.state).terminal or bool(existing.branch) or mention.on_handoff_pr
        )
        if follow_up and existing is not None and mention.can_write:
            if existing.needs_approval:
                return Reply(
                    f"Task `{existing.id}` is waiting for a maintainer's `/handoff approve`.",
                    existing.id,
                    ok=False,
                )
            delivery = f"{mention.source}:{mention.delivery_id}"
            history = TaskLinks.of(existing).followup_history(existing.followups)
            if any(f.context.delivery == delivery for f in history):
                return Reply(f"Already noted on task `{existing.id}`.", existing.id)
            review = mention.review.model_dump(exclude_none=True) if mention.review else {}
            context = FollowUpContext.model_validate({**mention.context, **review, "delivery": delivery})
            await ctx.tasks.follow_up(existing.id, text, mention.author, context)
            waiting_answer = (existing.state_reason or "").startswith(WAIT_QUESTION)
            when = "now" if TaskState(existing.state).terminal or waiting_answer else "after the current run"
            return Reply(f"Got it — I'll work on this follow-up {when} on task `{existing.id}`.", existing.id)
        repo = mention.repo
        if not repo:
            return Reply(
                "Which repository? Say `/handoff owner/repo <instructions>` or bind this channel.", ok=False
            )
        task, created = await ctx.tasks.create(
            NewTask(
                repo=repo,
                instructions=text,
                source=TaskSource(mention.task_source),
                agent=cmd.options.get("agent"),
                base_ref=cmd.options.get("base"),
                requester=mention.author,
                dedupe_key=f"{mention.source}:{mention.delivery_id}",
                target_key=mention.target_key,
                links=mention.links.with_(
                    **({"options": cmd.options} if cmd.options else {}),
                    # Text from outside the repository's writers is marked as data in the prompt,
                    # approved or not: approval lets the request run, it does not vouch for it.
                    **({"untrusted": True} if mention.untrusted or not mention.can_write else {}),
                ),
                # Budgets the ingress allows for this request (e.g. a repository's bounded .handoff.yml).
                budget=dict(mention.budget),
                needs_approval=not mention.can_write,
            )
        )
        if not created:
            return Reply(f"Already on it: task `{task.id}`.", task.id)
        if task.needs_approval:
            return Reply(
                f"Thanks! Only people with write access can start Handoff here, so task `{task.id}` waits "
                f"until a maintainer comments `/handoff approve {task.id}`.",
                task.id,
                ok=False,
            )
        return Reply(f"On it: task `{task.id}` is queued.", task.id)

    @registry.command(
        "help", usage="/handoff help", description="Show these commands.", who_can_use=Who.anyone
    )
    async def help_(cmd: Command, ctx: CommandContext) -> Reply:
        return Reply(ctx.registry.help_for(cmd.mention.source), private=True)

    @registry.command(
        "status",
        usage="/handoff status",
        description="Say where the task here stands.",
        who_can_use=Who.anyone,
        on_task=True,
    )
    async def status(cmd: Command, ctx: CommandContext) -> Reply:
        task = await _task_for(cmd, ctx)
        if task is None:
            return Reply("There is no Handoff task here yet.", private=True)
        return Reply(_describe(task), task.id, private=True)

    @registry.command(
        "cancel",
        usage="/handoff cancel",
        description="Stop the task running or queued here.",
        who_can_use=Who.requester_or_writers,
        on_task=True,
        audits_itself=True,
    )
    async def cancel(cmd: Command, ctx: CommandContext) -> Reply:
        task = await _task_for(cmd, ctx)
        if task is None or TaskState(task.state).terminal:
            return Reply("Nothing to cancel here.", ok=False)
        if not allowed(ctx.registry.get("cancel"), cmd.mention, task.requester):
            return Reply(
                "Only the requester or someone with write access can cancel this task.", task.id, ok=False
            )
        task = await ctx.tasks.cancel(task.id, actor=cmd.mention.author)
        return Reply(f"Cancelling task `{task.id}`.", task.id)

    @registry.command(
        "retry",
        usage="/handoff retry",
        description="Run the last task here again.",
        who_can_use=Who.writers,
        on_task=True,
        audits_itself=True,
    )
    async def retry(cmd: Command, ctx: CommandContext) -> Reply:
        task = await _task_for(cmd, ctx)
        if task is None:
            return Reply("There is no task here to retry.", ok=False)
        if not allowed(ctx.registry.get("retry"), cmd.mention, task.requester):
            return Reply("Only someone with write access can retry.", task.id, ok=False)
        try:
            task = await ctx.tasks.retry(task.id, actor=cmd.mention.author)
        except InvalidTransition:
            return Reply(
                f"Task `{task.id}` is still {task.state}; retry it once it has ended.", task.id, ok=False
            )
        return Reply(f"Retrying task `{task.id}`.", task.id)

    @registry.command(
        "approve",
        usage="/handoff approve [task-id]",
        description="Let a request from someone without write access run (name it when there are several).",
        who_can_use=Who.writers,
        on_task=True,
        audits_itself=True,
    )
    async def approve(cmd: Command, ctx: CommandContext) -> Reply:
        key = cmd.mention.target_key
        pending = await ctx.tasks.awaiting_approval(key) if key else []
        if not pending:
            return Reply("Nothing here is waiting for approval.", ok=False)
        if not allowed(ctx.registry.get("approve"), cmd.mention):
            return Reply("Only someone with write access can approve.", pending[0].id, ok=False)
        named = cmd.args[0] if cmd.args else None
        if named is None and len(pending) > 1:
            # Approving "whatever is there" could approve a request slipped in after the one the
            # maintainer read: with several, the maintainer names the one they mean.
            listed = "; ".join(f"`{t.id}` ({_first_line(t.instructions)})" for t in pending)
            return Reply(
                f"Several requests wait for approval here: {listed}. Say `/handoff approve <task-id>`.",
                ok=False,
            )
        task = next((t for t in pending if t.id == named), None) if named else pending[0]
        if task is None:
            return Reply(f"`{named}` is not a request waiting for approval here.", ok=False)
        task = await ctx.tasks.approve(task.id, actor=cmd.mention.author)
        return Reply(f"Approved: task `{task.id}` ({_first_line(task.instructions)}) is queued.", task.id)

    return registry


async def handle(mention: Mention, ctx: CommandContext) -> Reply | Ignore:
    """Parse and run a mention; every decision is written to the audit log.

    The reply names the command that answered (``Reply.command``).
    """
    parsed = ctx.registry.parse(mention)
    if isinstance(parsed, Ignore | Reply):
        return parsed
    reply = await _run(parsed, ctx)
    return replace(reply, command=parsed.name)


async def _run(parsed: Command, ctx: CommandContext) -> Reply:
    mention = parsed.mention
    spec = ctx.registry.get(parsed.name)
    if (
        spec.who_can_use is Who.writers
        and not (mention.can_write or mention.is_admin)
        and parsed.name != Registry.WORK
    ):
        reply = Reply(f"`{spec.usage}` is for {spec.who_can_use.value}.", ok=False, private=True)
        await ctx.tasks.audit(
            mention.author, parsed.name, "denied", reason=reply.text, data={"source": mention.source}
        )
        return reply
    try:
        prepared: Command | Reply = parsed
        if parsed.name == Registry.WORK and ctx.prepare_work is not None:
            prepared = await ctx.prepare_work(parsed)
        reply = prepared if isinstance(prepared, Reply) else await spec.handler(prepared, ctx)
    except NotFound as exc:
        reply = Reply(str(exc), ok=False)
    if not spec.audits_itself:
        await ctx.tasks.audit(
            mention.author, parsed.name, "answered", task_id=reply.task_id, data={"source": mention.source}
        )
    elif not reply.ok and reply.task_id is None:
        await ctx.tasks.audit(
            mention.author, parsed.name, "refused", reason=reply.text, data={"source": mention.source}
        )
    return reply
