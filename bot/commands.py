"""Commands that exist only in Slack, registered into the one command registry.

``bind`` and ``unbind`` tie a channel to a repository. They live in the shared registry (so Slack's
``help`` is generated from it like every other command's) but only Slack recognises them: on
GitHub the same words are free text, as they always were. Their handlers decide for themselves
(Handoff admins only) and audit as ``slack:bind`` / ``slack:unbind``.
"""

from __future__ import annotations

from bot.access import Access, is_repo_name
from core.commands import Command, Registry, Reply, Who
from core.tasks import TaskService

SLACK = frozenset({"slack"})
NOT_ADMIN = "only Handoff admins (slack.admins in handoff.yml) can bind channels"


def register(registry: Registry, access: Access, tasks: TaskService, command: str = "/handoff") -> None:
    """Register Slack's own commands (once per registry: a second bot on it reuses them)."""
    if "bind" in registry:
        return

    async def allowed(cmd: Command, action: str, channel: str) -> bool:
        if cmd.mention.is_admin:
            return True
        await tasks.audit(cmd.mention.author, action, "denied", reason=NOT_ADMIN, data={"channel": channel})
        return False

    @registry.command(
        "bind",
        usage="/handoff bind owner/repo",
        description="Bind this channel to a repository: `/handoff <what to do>` here works on it.",
        who_can_use=Who.admins,
        platforms=SLACK,
        audits_itself=True,
    )
    async def bind(cmd: Command, _ctx: object) -> Reply:
        channel = cmd.mention.channel or ""
        if not await allowed(cmd, "slack:bind", channel):
            return Reply(f"Sorry, {NOT_ADMIN}.", ok=False, private=True)
        if len(cmd.args) != 1 or not is_repo_name(cmd.args[0]):
            return Reply(f"Usage: `{command} bind owner/repo`", ok=False, private=True)
        repo = cmd.args[0]
        await access.bind(channel, repo, cmd.mention.author)
        await tasks.audit(
            cmd.mention.author, "slack:bind", "allowed", data={"channel": channel, "repo": repo}
        )
        return Reply(
            f"Bound <#{channel}> to `{repo}`: `{command} <what to do>` here works on it.", private=True
        )

    @registry.command(
        "unbind",
        usage="/handoff unbind",
        description="Unbind this channel from its repository.",
        who_can_use=Who.admins,
        platforms=SLACK,
        audits_itself=True,
    )
    async def unbind(cmd: Command, _ctx: object) -> Reply:
        channel = cmd.mention.channel or ""
        if not await allowed(cmd, "slack:unbind", channel):
            return Reply(f"Sorry, {NOT_ADMIN}.", ok=False, private=True)
        await access.bind(channel, None, cmd.mention.author)
        await tasks.audit(cmd.mention.author, "slack:unbind", "allowed", data={"channel": channel})
        return Reply("This channel is no longer bound to a repository.", private=True)
