"""The shared command registry and handlers, table-driven (as Prow does), on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.commands import Command, Registry, Reply, Who
from core.handlers import CommandContext, build_registry, handle
from core.settings import Settings
from jobs.services import WorkerServices, build_worker_services
from tests.support.commands import REGISTRY, mention

PARSE = [
    ("help", "help", []),
    ("cancel", "cancel", []),
    ("CANCEL", "cancel", []),
    ("status please", "status", ["please"]),
    ("fix the flaky test in utils.py", "work", ["fix the flaky test in utils.py"]),
    ("--model gpt-x fix it", "work", ["fix it"]),
    ("cancellation should be faster", "work", ["cancellation should be faster"]),
    ('say "hello world"', "work", ['say "hello world"']),
]


@pytest.mark.parametrize(("text", "name", "args"), PARSE, ids=[p[0] for p in PARSE])
def test_parse(text: str, name: str, args: list[str]) -> None:
    parsed = REGISTRY.parse(mention(text))
    assert isinstance(parsed, Command)
    assert (parsed.name, parsed.args) == (name, args)


def test_options_and_empty_text() -> None:
    parsed = REGISTRY.parse(mention("--model gpt-x --agent codex\nline two"))
    assert isinstance(parsed, Command) and parsed.options == {"model": "gpt-x", "agent": "codex"}
    assert parsed.rest == "line two"
    empty = REGISTRY.parse(mention("   "))
    assert isinstance(empty, Reply) and "Handoff commands" in empty.text
    dangling = REGISTRY.parse(mention("--model x"))
    assert isinstance(dangling, Reply) and not dangling.ok


def test_help_is_generated_the_same_for_both_platforms() -> None:
    md, slack = REGISTRY.help_text("markdown"), REGISTRY.help_text("slack")
    for spec in REGISTRY.specs:
        assert spec.usage in md and spec.usage in slack
        assert spec.description in md and spec.description in slack
    assert md.replace("**", "*") == slack


def test_registry_requires_help_and_unique_names() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="needs usage"):
        registry.command("x", usage="", description="d", who_can_use=Who.anyone)
    registry.command("x", usage="u", description="d", who_can_use=Who.anyone)(_noop)
    with pytest.raises(ValueError, match="twice"):
        registry.command("x", usage="u", description="d", who_can_use=Who.anyone)(_noop)


async def _noop(cmd: Command, ctx: object) -> Reply:
    return Reply("")


def test_platform_commands_exist_only_where_registered() -> None:
    registry = build_registry()
    registry.command(
        "bind",
        usage="/handoff bind x",
        description="d",
        who_can_use=Who.admins,
        platforms=frozenset({"slack"}),
    )(_noop)
    on_slack = registry.parse(mention("bind acme/web", source="slack"))
    on_github = registry.parse(mention("bind acme/web"))
    assert isinstance(on_slack, Command) and on_slack.name == "bind"
    assert isinstance(on_github, Command) and on_github.name == "work"  # free text, as before
    assert "/handoff bind x" in registry.help_for("slack")
    assert "/handoff bind x" not in registry.help_for("github")
    assert registry.on_task("slack") == ("approve", "cancel", "retry", "status")


@pytest.fixture
async def ctx(sqlite_settings: Settings) -> AsyncIterator[CommandContext]:
    wc: WorkerServices = build_worker_services(sqlite_settings)
    yield CommandContext(tasks=wc.tasks, registry=REGISTRY)
    await wc.close()


async def test_writer_starts_a_task_and_a_repeat_delivery_is_a_no_op(ctx: CommandContext) -> None:
    first = mention("echo hi")
    reply = await handle(first, ctx)
    assert isinstance(reply, Reply) and reply.ok and reply.task_id
    task = await ctx.tasks.get(reply.task_id)
    assert (task.state, task.requester, task.target_key) == ("queued", "alice", "github:octo/demo#1")
    again = await handle(first, ctx)  # the same delivery redelivered
    assert isinstance(again, Reply) and again.task_id == reply.task_id and "Already on it" in again.text


async def test_outsider_waits_for_approval_then_runs(ctx: CommandContext) -> None:
    reply = await handle(mention("echo hi", author="mallory", can_write=False), ctx)
    assert isinstance(reply, Reply) and not reply.ok and "/handoff approve" in reply.text
    task = await ctx.tasks.get(reply.task_id or "")
    assert task.state == "waiting" and task.needs_approval
    denied = await handle(mention("approve", author="mallory", can_write=False), ctx)
    assert isinstance(denied, Reply) and not denied.ok and "write access" in denied.text
    approved = await handle(mention("approve", author="maintainer"), ctx)
    assert isinstance(approved, Reply) and approved.ok
    assert (await ctx.tasks.get(task.id)).state == "queued"


async def test_cancel_by_requester_or_writer_only(ctx: CommandContext) -> None:
    reply = await handle(mention("echo hi", author="bob", can_write=False), ctx)
    assert reply.task_id  # type: ignore[union-attr]
    stranger = await handle(mention("cancel", author="eve", can_write=False), ctx)
    assert isinstance(stranger, Reply) and not stranger.ok
    own = await handle(mention("cancel", author="bob", can_write=False), ctx)
    assert isinstance(own, Reply) and own.ok
    assert (await ctx.tasks.get(reply.task_id)).state == "cancelled"  # type: ignore[union-attr]


async def test_status_retry_and_follow_up(ctx: CommandContext) -> None:
    nothing = await handle(mention("status", target_key="github:octo/demo#99"), ctx)
    assert isinstance(nothing, Reply) and "no Handoff task" in nothing.text
    started = await handle(mention("echo one"), ctx)
    status = await handle(mention("status"), ctx)
    assert isinstance(status, Reply) and "is *queued*" in status.text
    early = await handle(mention("retry"), ctx)
    assert isinstance(early, Reply) and not early.ok and "once it has ended" in early.text
    follow = await handle(mention("also update the README"), ctx)
    assert isinstance(follow, Reply) and "after the current run" in follow.text
    task = await ctx.tasks.get(started.task_id or "")  # type: ignore[union-attr]
    assert [f["text"] for f in task.followups] == ["also update the README"]


async def test_no_repository_is_explained(ctx: CommandContext) -> None:
    reply = await handle(mention("do it", repo=None, target_key=None, source="slack"), ctx)
    assert isinstance(reply, Reply) and not reply.ok and "Which repository" in reply.text
