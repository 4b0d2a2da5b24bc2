"""``handoff doctor``: check each dependency and print what to do about failures."""

from __future__ import annotations

import shutil

from rich.console import Console
from sqlalchemy import text

from core.config import load_config
from core.errors import HandoffError
from core.settings import Settings
from jobs.image import image_exists
from jobs.sandbox import DockerSandbox
from web.services import build_services


async def run_doctor(settings: Settings, console: Console) -> bool:
    """Print one line per check; return True when everything passes."""
    results: list[tuple[str, bool, str]] = []
    try:
        config = load_config(settings.handoff_config)
        results.append(
            ("config", True, f"{len(config.profiles)} profile(s), default {config.default_profile!r}")
        )
    except HandoffError as exc:
        results.append(("config", False, f"{exc} — fix handoff.yml or unset HANDOFF_CONFIG"))
        config = None
    svc = build_services(settings)
    try:
        try:
            async with svc.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            results.append(("database", True, settings.database_url.split("@")[-1]))
        except Exception as exc:
            results.append(("database", False, f"{exc.__class__.__name__}: {exc} — check DATABASE_URL"))
        try:
            await svc.queue.ping()
            results.append(("redis", True, settings.redis_url.split("@")[-1]))
        except HandoffError as exc:
            results.append(
                ("redis", False, f"{exc} — start Redis or set REDIS_URL (`handoff up` starts one)")
            )
        docker_ok = False
        try:
            await svc.sandbox.ping()
            docker_ok = True
            results.append(("docker", True, "engine answers"))
        except HandoffError as exc:
            results.append(("docker", False, f"{exc} — start dockerd or set DOCKER_HOST"))
        if config is not None and docker_ok and isinstance(svc.sandbox, DockerSandbox):
            client = svc.sandbox.docker_client()
            for name, profile in config.profiles.items():
                present = image_exists(client, profile.image)
                detail = (
                    f"used by profile {name!r}"
                    if present
                    else "missing — run `handoff sandbox build --offline`"
                )
                results.append((f"image {profile.image}", present, detail))
        if settings.slack_configured:
            from bot.doctor import check_slack

            results.extend(await check_slack(settings))
        git = shutil.which("git")
        results.append(("git", git is not None, git or "missing — apt-get install git"))
    finally:
        await svc.close()
    for name, ok, detail in results:
        mark = "[green]ok[/green]  " if ok else "[red]FAIL[/red]"
        console.print(f"{mark} {name:28} {detail}")
    return all(ok for _, ok, _ in results)
