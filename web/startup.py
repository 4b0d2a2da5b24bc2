"""What ``serve`` and ``up`` do around the server: a local Redis for a laptop, and the one summary
block printed once the API answers (URL, sign-in link, worker state, integrations)."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.errors import HandoffError
from core.settings import Settings
from web.deps import is_loopback
from web.health import WORKER_HEALTH_INTERVAL_S, last_worker_beat


def redis_answers(url: str) -> bool:
    """True when a Redis server answers PING at ``url``."""
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "localhost", parsed.port or 6379), timeout=1
        ) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the parent exits (best effort elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalRedisError(HandoffError):
    """Redis does not answer and cannot be started here."""


def start_local_redis(url: str, state_dir: Path, redis_server: str | None) -> subprocess.Popen[bytes] | None:
    """Start ``redis-server`` as a child when ``url`` (on loopback) does not answer; ``None`` if it does."""
    if redis_answers(url):
        return None
    parsed = urlparse(url)
    if not is_loopback(parsed.hostname or "localhost"):
        raise LocalRedisError(f"REDIS_URL {url} does not answer and is not local; start Redis there")
    if redis_server is None:
        raise LocalRedisError(
            "Redis does not answer and redis-server is not installed (apt-get install redis-server)"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    port = str(parsed.port or 6379)
    args = [redis_server, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*args, "--dir", str(state_dir)],
        # The server dies with us even when a signal kills us; it ignores the terminal's Ctrl-C
        # (its own process group) so that we stop it last, after the worker let go of it.
        preexec_fn=_die_with_parent,
        process_group=0,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(50):
        if redis_answers(url):
            return proc
        time.sleep(0.1)
    proc.terminate()
    raise LocalRedisError("redis-server did not start")


def _shown_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"


async def _worker_line(services: Any, in_process: bool, max_running: int) -> str:
    if in_process:
        return f"in this process (up to {max_running} runs at once)"
    try:
        beat = await asyncio.wait_for(last_worker_beat(services.queue), 3)
    except (HandoffError, TimeoutError) as exc:
        return f"unknown: {exc}"
    if beat is None:
        return f"none reported in the last {WORKER_HEALTH_INTERVAL_S} s: start one with `handoff worker`"
    return f"a worker reported {beat.age_s:.0f} s ago ({beat.info})"


async def summary(
    settings: Settings, app: Any, host: str, port: int, *, in_process_worker: bool, socket_mode: bool
) -> list[tuple[str, str]]:
    """The rows of the start-up summary block."""
    services = app.state.services
    config = services.config
    local = _shown_url(host, port)
    public = settings.handoff_public_url.rstrip("/")
    public_is_local = is_loopback(urlparse(public).hostname or "localhost")
    rows = [("URL", f"{local}  (API docs {local}/docs · probes /livez /readyz)")]
    if not public_is_local:
        rows.append(("public URL", public))
    dashboard = getattr(app.state, "dashboard", None)
    sign_in = public if not public_is_local else local
    if settings.handoff_api_token is None and dashboard is not None:
        rows.append(("sign in", f"{sign_in}/login?token={dashboard.local_token}"))
    else:
        rows.append(("sign in", f"{sign_in}/login?token=<HANDOFF_API_TOKEN>"))
    if settings.github_client_id and settings.github_client_secret:
        rows.append(("", f"or with GitHub: {sign_in}/login"))
    rows.append(("worker", await _worker_line(services, in_process_worker, config.limits.max_running)))
    if settings.github_configured:
        where = "" if not public_is_local else " — HANDOFF_PUBLIC_URL is local: GitHub cannot reach it"
        rows.append(("GitHub", f"on, webhooks at {public}/github/webhooks{where}"))
    else:
        rows.append(("GitHub", "off (`handoff setup github` connects an App)"))
    if settings.slack_configured:
        mode = "Socket Mode" if socket_mode else f"events at {public}/slack/events"
        rows.append(("Slack", f"on, {mode}"))
    else:
        rows.append(("Slack", "off (SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET or SLACK_APP_TOKEN)"))
    keys = [
        name
        for name, key in (("Anthropic", settings.anthropic_api_key), ("OpenAI", settings.openai_api_key))
        if key is not None
    ]
    rows.append(
        ("models", f"keys for {', '.join(keys)}" if keys else "no model keys (the shell profile needs none)")
    )
    if config.webhooks:
        rows.append(("webhooks", f"{len(config.webhooks)} status endpoint(s)"))
    source = str(settings.handoff_config) if settings.handoff_config else "built-in defaults (no handoff.yml)"
    rows.append(
        ("config", f"{source}: profiles {', '.join(config.profiles)}; default {config.default_profile}")
    )
    return rows


def render(rows: list[tuple[str, str]]) -> str:
    """The summary block as text."""
    width = max(len(name) for name, _ in rows)
    lines = ["Handoff is up"] + [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)
