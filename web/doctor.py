"""``handoff doctor``: check each dependency and integration, and say what to do about failures.

Every integration is covered: what is not configured prints ``off`` with how to turn it on, and
only something configured and broken is a ``FAIL`` (exit status 1).
"""

from __future__ import annotations

import asyncio
import os
import shutil

from rich.console import Console
from rich.markup import escape
from sqlalchemy import text

from core.checks import Check, CheckStatus, public_url_problem
from core.config import HandoffConfig, load_config
from core.errors import HandoffError
from core.services import Services
from core.settings import Settings
from jobs.agent_image import RECIPES
from jobs.image import DEFAULT_TAGS, image_exists
from jobs.sandbox import DockerSandbox
from jobs.services import build_services
from web.health import WORKER_HEALTH_INTERVAL_S, last_worker_beat

MARKS = {
    CheckStatus.ok: "[green]ok  [/green]",
    CheckStatus.off: "[dim]off [/dim]",
    CheckStatus.warn: "[yellow]warn[/yellow]",
    CheckStatus.fail: "[red]FAIL[/red]",
}


def build_command(image: str) -> str:
    """How to build ``image``, for the images this project has recipes for."""
    for variant, tag in DEFAULT_TAGS.items():
        if image == tag:
            return f"handoff sandbox build --offline --variant {variant}"
    if image.startswith("handoff-agent:"):
        name = image.split(":", 1)[1]
        dockerfile = f"docker build -f docker/agents/{name}.Dockerfile -t {image} ."
        if name in RECIPES:  # the real CLIs also build offline (jobs/agent_image.py)
            return f"uv run python -m jobs.agent_image {name} (offline), or {dockerfile}"
        return dockerfile
    return f"docker pull {image} (or build it)"


def _public_url(settings: Settings) -> Check:
    url = settings.handoff_public_url
    problem = public_url_problem(url)
    if problem is None:
        if url.startswith("http://"):
            return Check.warn("public URL", f"{url} is not https: put a reverse proxy with TLS in front")
        return Check.ok("public URL", url)
    needs = [
        name
        for name, wanted in (
            ("GitHub webhooks", settings.github_configured),
            ("Slack events", settings.slack_configured and settings.slack_app_token is None),
        )
        if wanted
    ]
    if needs:
        return Check.fail(
            "public URL",
            f"{url}: {problem}, but {' and '.join(needs)} need a URL they can reach (README: A public URL)",
        )
    return Check.ok("public URL", f"{url} (local only; fine without GitHub webhooks or Slack HTTP events)")


async def _dependencies(svc: Services, settings: Settings) -> tuple[list[Check], bool]:
    rows: list[Check] = []
    try:
        async with svc.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        rows.append(Check.ok("database", settings.database_url.split("@")[-1]))
    except Exception as exc:  # any driver error: report it, keep checking the rest
        rows.append(Check.fail("database", f"{exc.__class__.__name__}: {exc} — check DATABASE_URL"))
    try:
        await svc.queue.ping()
        rows.append(Check.ok("redis", settings.redis_url.split("@")[-1]))
        beat = await last_worker_beat(svc.queue)
        if beat is None:
            rows.append(
                Check.warn(
                    "worker",
                    f"none reported in the last {WORKER_HEALTH_INTERVAL_S} s: tasks wait until "
                    "`handoff worker` (or `handoff up`) runs",
                )
            )
        else:
            rows.append(Check.ok("worker", f"reported {beat.age_s:.0f} s ago: {beat.info}"))
    except HandoffError as exc:
        rows.append(Check.fail("redis", f"{exc} — start Redis or set REDIS_URL (`handoff up` starts one)"))
    try:
        await svc.sandbox.ping()
        rows.append(Check.ok("docker", "engine answers"))
        docker_ok = True
    except HandoffError as exc:
        rows.append(Check.fail("docker", f"{exc} — start dockerd or set DOCKER_HOST"))
        docker_ok = False
    return rows, docker_ok


def _images(svc: Services, config: HandoffConfig) -> list[Check]:
    if not isinstance(svc.sandbox, DockerSandbox):
        return []
    client = svc.sandbox.docker_client()
    users: dict[str, list[str]] = {}
    for name, profile in config.profiles.items():
        users.setdefault(profile.image, []).append(name)
    rows = []
    for image, names in users.items():
        used = f"profile{'s' if len(names) > 1 else ''} {', '.join(names)}"
        if image_exists(client, image):
            rows.append(Check.ok(f"image {image}", f"used by {used}"))
        else:
            rows.append(Check.fail(f"image {image}", f"missing ({used}) — build it: {build_command(image)}"))
    return rows


def _workspace(settings: Settings) -> Check:
    where = settings.handoff_workspace_dir
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return Check.fail("workspace dir", f"{where} is not writable by this user")
    return Check.ok("workspace dir", str(where))


async def run_doctor(settings: Settings, console: Console) -> bool:
    """Print one line per check; return False when something configured is broken."""
    from bot.doctor import check_slack
    from github_app.doctor import check_github
    from jobs.agent.doctor import check_models

    rows: list[Check] = []
    try:
        config = load_config(settings.handoff_config)
        source = settings.handoff_config or "built-in defaults (no handoff.yml)"
        rows.append(
            Check.ok(
                "config", f"{source}: {len(config.profiles)} profile(s), default {config.default_profile!r}"
            )
        )
    except HandoffError as exc:
        rows.append(Check.fail("config", f"{exc} — fix handoff.yml or unset HANDOFF_CONFIG"))
        config = HandoffConfig()
    rows.append(_public_url(settings))
    svc = build_services(settings)
    try:
        found, docker_ok = await _dependencies(svc, settings)
        rows.extend(found)
        if docker_ok:
            rows.extend(_images(svc, config))
    finally:
        await svc.close()
    rows.append(_workspace(settings))
    git = shutil.which("git")
    rows.append(Check.ok("git", git) if git else Check.fail("git", "missing — apt-get install git"))
    for found in await asyncio.gather(
        check_github(settings), check_slack(settings), check_models(settings, config)
    ):
        rows.extend(found)
    for row in rows:
        console.print(f"{MARKS[row.status]} {escape(row.name):28} {escape(row.detail)}", highlight=False)
    broken = [row.name for row in rows if row.broken]
    console.print(f"{len(broken)} problem(s): {', '.join(broken)}" if broken else "no problems found")
    return not broken
