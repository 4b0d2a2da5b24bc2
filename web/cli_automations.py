"""``handoff automations test | list``: try rules on a recorded payload; see what they did."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from core.automations.report import RuleStats, rule_stats
from core.automations.rules import Rule, parse_rules
from core.config import HandoffConfig, load_config
from core.errors import ConfigError
from core.settings import Settings
from web.cli_settings import fail, load_cli_settings

automations_app = typer.Typer(
    help="Automation rules: try them on a payload, see what they did.", no_args_is_help=True
)
console = Console(highlight=False, soft_wrap=True)


def _settings() -> tuple[Settings, HandoffConfig]:
    settings = load_cli_settings()
    try:
        return settings, load_config(settings.handoff_config)
    except ConfigError as exc:
        fail(str(exc), 2)


def _trigger(rule: Rule) -> str:
    return f"schedule `{rule.schedule}`" if rule.schedule else ", ".join(rule.events)


@automations_app.command("test")
def test(
    payload: Annotated[Path, typer.Argument(help="a recorded webhook payload (JSON)")],
    repo_config: Annotated[
        Path | None, typer.Option(help="a repository's .handoff.yml, bounded as the server bounds it")
    ] = None,
    event: Annotated[
        str | None, typer.Option(help="X-GitHub-Event (guessed from the file when omitted)")
    ] = None,
) -> None:
    """Which rules fire on PAYLOAD, and the instructions each would get (offline: nothing is sent)."""
    from github_app.automations.dryrun import dry_run
    from github_app.replay import infer_event

    settings, config = _settings()
    try:
        data = json.loads(payload.read_text(encoding="utf-8"))
        name = event or infer_event(payload, data)
        repo_text = repo_config.read_text(encoding="utf-8") if repo_config is not None else None
    except OSError as exc:
        fail(f"cannot read {exc.filename}: {exc.strerror}", 2)
    except ValueError as exc:
        fail(f"{payload}: {exc}", 2)
    login = f"{settings.github_app_slug or 'handoff'}[bot]"
    found = dry_run(config, name, data, repo_config=repo_text, app_login=login)
    if found.facts is None:
        fail(found.problem or "nothing to test", 2)
    facts = found.facts
    console.print(
        f"[bold]{escape(facts.event)}[/bold] on {escape(facts.repo)} (sender {escape(facts.sender or '?')})"
    )
    for name_, reason in found.refused:
        console.print(f"[red]refused[/red] repository rule {escape(name_)}: {escape(reason)}")
    if not found.verdicts:
        console.print("no rule listens to this event here")
    for v in found.verdicts:
        head = f"{v.rule.name} ({v.source}, do: {v.rule.do})"
        if not v.fires:
            console.print(f"[yellow]✘ {escape(head)}[/yellow]: skipped — {escape(v.reason or '')}")
            continue
        console.print(f"[green]✔ {escape(head)}[/green]: fires")
        if v.unchecked:
            console.print(f"    not checked offline: {escape('; '.join(v.unchecked))}")
        console.print(f"    dedupe key: {escape(v.dedupe_key)}")
        console.print("    instructions:")
        for line in v.instructions.splitlines():
            console.print(f"    │ {escape(line)}")
    console.print("[dim](pauses and rate limits are not checked offline)[/dim]")


def _last(stat: RuleStats) -> str:
    what = stat.last_decision + (f" ({stat.last_reason})" if stat.last_reason else "")
    task = f", task {stat.last_task}" if stat.last_task else ""
    cost = f", ${stat.cost_usd:.2f}" if stat.cost_usd else ""
    return (
        f"last {stat.last_at:%Y-%m-%d %H:%M} {what}{task}; fired {stat.fired}, skipped {stat.skipped}{cost}"
    )


@automations_app.command("list")
def list_rules() -> None:
    """The rules per repository, with their last firing (the server's and repositories' own)."""
    from core.db import make_engine, make_sessions

    settings, config = _settings()
    rules = parse_rules(config.automations, "automations")

    async def load() -> list[RuleStats]:
        engine = make_engine(settings.database_url)
        try:
            return await rule_stats(make_sessions(engine))
        finally:
            await engine.dispose()

    try:
        stats = asyncio.run(load())
    except Exception as exc:  # an unreachable or unmigrated database: one line, not a traceback
        fail(f"cannot read the automation history: {str(exc).splitlines()[0] if str(exc) else exc!r}")
    if not rules and not stats:
        console.print("no automation rules (`automations:` in handoff.yml)")
        return
    for rule in rules:
        where = ", ".join(rule.repos) or "every repository"
        console.print(
            f"[bold]{escape(rule.name)}[/bold] (server): {escape(_trigger(rule))} → {rule.do} on {escape(where)}"
        )
    repos = sorted(
        {s.repo for s in stats} | {r for rule in rules for r in rule.repos if not set(r) & set("*?")}
    )
    for repo in repos:
        console.print(f"\n[bold]{escape(repo)}[/bold]")
        here = {(s.rule, s.source): s for s in stats if s.repo == repo}
        names = [(r.name, "server") for r in rules if r.applies_to(repo)]
        names += [key for key in here if key not in names]
        for rule_name, source in names:
            stat = here.get((rule_name, source))
            console.print(
                f"  {escape(rule_name)} ({source}): {escape(_last(stat)) if stat else 'never fired'}"
            )
