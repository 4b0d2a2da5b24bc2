"""``pause`` and ``resume``: the automations kill switch, as commands of the one registry.

``/handoff pause`` stops automations on the repository at once — no rule fires there, and every
task an automation started or drives is cancelled — until ``/handoff resume``. ``pause org`` does
the same for every repository of the owner and needs the admin role. Both work wherever the mention
names a repository (a GitHub comment, a Slack channel bound to one).
"""

from __future__ import annotations

from core.automations.ledger import Ledger
from core.commands import Command, Registry, Reply, Who
from core.errors import InvalidTransition
from core.tasks import TaskService

_ORG_WORDS = ("org", "owner", "all")


def _scope(cmd: Command) -> tuple[str | None, str | None]:
    """The scope the command names, or why it names none."""
    repo = cmd.mention.repo
    if not repo:
        return (
            None,
            "Which repository? Say it on the repository's issue or pull request, or in a bound channel.",
        )
    if cmd.args and cmd.args[0].lower() in _ORG_WORDS:
        if not cmd.mention.is_admin:
            return None, "Only admins can pause or resume every repository of the owner."
        return f"{repo.partition('/')[0]}/*", None
    if cmd.args:
        return None, "Say `pause` (this repository) or `pause org` (every repository of the owner)."
    return repo, None


def register(registry: Registry, ledger: Ledger, tasks: TaskService) -> None:
    """Register ``pause`` and ``resume`` (once per registry)."""
    if "pause" in registry:
        return

    @registry.command(
        "pause",
        usage="/handoff pause [org]",
        description="Stop automations on this repository (or the owner's) now, until `resume`.",
        who_can_use=Who.writers,
        examples=("/handoff pause", "/handoff pause org"),
        audits_itself=True,
    )
    async def pause(cmd: Command, _ctx: object) -> Reply:
        scope, problem = _scope(cmd)
        if scope is None:
            return Reply(problem or "", ok=False)
        actor = f"{cmd.mention.source}:{cmd.mention.author}"
        await ledger.set_paused(scope, True, actor)
        stopped = 0
        for task in await ledger.active_tasks(scope):
            try:
                await tasks.cancel(task.id, actor=actor)
                stopped += 1
            except InvalidTransition:
                continue  # it ended meanwhile
        return Reply(
            f"Automations paused on `{scope}`: no rule fires there until `/handoff resume`"
            + (f"; {stopped} running automation task(s) stopped." if stopped else ".")
        )

    @registry.command(
        "resume",
        usage="/handoff resume [org]",
        description="Let automations fire again on this repository (or the owner's).",
        who_can_use=Who.writers,
        examples=("/handoff resume",),
        audits_itself=True,
    )
    async def resume(cmd: Command, _ctx: object) -> Reply:
        scope, problem = _scope(cmd)
        if scope is None:
            return Reply(problem or "", ok=False)
        await ledger.set_paused(scope, False, f"{cmd.mention.source}:{cmd.mention.author}")
        still = await ledger.paused(cmd.mention.repo or scope)
        if still is not None:
            return Reply(f"Resumed `{scope}`, but automations stay paused: `{still.scope}` by {still.by}.")
        return Reply(f"Automations resumed on `{scope}`.")
