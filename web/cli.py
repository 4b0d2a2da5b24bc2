"""The ``handoff`` command line (``handoff task ...`` lives in :mod:`web.cli_tasks`)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer
from rich.console import Console
from rich.markup import escape

from core.errors import HandoffError
from core.settings import Settings
from web.cli_automations import automations_app
from web.cli_settings import fail, load_cli_settings
from web.cli_tasks import task_app
from web.deps import is_loopback

app = typer.Typer(
    help="Handoff: hand coding work to AI agents from GitHub, Slack and the API.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
sandbox_app = typer.Typer(help="The agent sandbox images.", no_args_is_help=True)
setup_app = typer.Typer(help="Connect Handoff to GitHub and Slack.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(task_app, name="task")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(setup_app, name="setup")
app.add_typer(automations_app, name="automations")

log = logging.getLogger("handoff")
console = Console(highlight=False)
# Read when HANDOFF_CONFIG is unset, from the directory the command runs in.

Host = Annotated[str, typer.Option(help="address to bind (a public one needs HANDOFF_API_TOKEN)")]
Port = Annotated[int, typer.Option(help="port to listen on")]
Migrate = Annotated[
    bool, typer.Option(help="apply database migrations first (compose runs a one-shot `migrate` instead)")
]
SocketMode = Annotated[
    bool | None,
    typer.Option(help="connect to Slack in Socket Mode (default: when SLACK_APP_TOKEN is set)"),
]


def _configure_logging() -> None:
    level = os.environ.get("HANDOFF_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # arq logs every job start and end, the reaper's every few seconds among them.
        logging.getLogger("arq.worker").setLevel(logging.WARNING)
        # Alembic announces each of its plugins; the migrations it runs are still logged.
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _migrate(settings: Settings) -> None:
    """Migrate, waiting while the database is away; anything else is one line, not a traceback."""
    from web.migrate import upgrade_when_reachable

    try:
        upgrade_when_reachable(settings.database_url)
    except Exception as exc:  # a refusing database (bad password, bad schema): say so and stop
        fail(f"cannot migrate the database at {_safe_url(settings.database_url)}: {_first_line(exc)}")


def _safe_url(url: str) -> str:
    parsed = urlparse(url)
    return url.replace(f":{parsed.password}@", ":***@") if parsed.password else url


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply database migrations (safe to run from several processes at once)."""
    from web.migrate import upgrade

    settings = load_cli_settings()
    try:
        upgrade(settings.database_url, revision)
    except Exception as exc:  # see _migrate
        fail(f"cannot migrate the database at {_safe_url(settings.database_url)}: {_first_line(exc)}")
    console.print(f"database at revision {revision}")


def _check_bind(settings: Settings, host: str) -> None:
    if settings.handoff_api_token is None and not is_loopback(host):
        fail(f"refusing to bind {host} without HANDOFF_API_TOKEN: set a token or bind 127.0.0.1", 2)


async def _start_socket_mode(api: Any, wanted: bool | None) -> Callable[[], Awaitable[None]] | None:
    """Socket Mode (for teams without a public URL) when wanted, or by default with an xapp- token."""
    settings: Settings = api.state.services.settings
    if wanted is False or (wanted is None and settings.slack_app_token is None):
        return None
    from bot.integration import SlackIntegration
    from bot.socket import start_socket_mode

    slack = next((i for i in api.state.services.integrations if isinstance(i, SlackIntegration)), None)
    if slack is None:
        fail("--socket-mode: Slack is not configured (SLACK_BOT_TOKEN and SLACK_APP_TOKEN)", 2)
    try:
        stop: Callable[[], Awaitable[None]] = await start_socket_mode(slack.bot)
    except Exception as exc:  # Slack down or a bad token must not stop the API; doctor says more
        log.warning("Slack Socket Mode did not connect: %s (run `handoff doctor`)", _first_line(exc))
        return None
    return stop


def _run_api(
    settings: Settings, host: str, port: int, *, with_worker: bool, socket_mode: bool | None
) -> None:
    """Serve the API (and, for ``up``, a worker in the same loop); print the summary once it answers."""
    import uvicorn

    from jobs.intake import HandoffWorker
    from jobs.worker import create_worker
    from web.app import create_app
    from web.health import WORKER_HEALTH_INTERVAL_S
    from web.integrations import worker_services
    from web.startup import render, summary

    async def main() -> None:
        api = create_app(settings)
        # log_config=None keeps our logging set-up (uvicorn's own would replace it).
        server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="info", log_config=None))
        w: HandoffWorker | None = None
        worker_task = None
        if with_worker:
            w = create_worker(
                settings,
                worker_services(settings),
                handle_signals=False,
                health_check_interval=WORKER_HEALTH_INTERVAL_S,
            )
            worker_task = asyncio.create_task(w.async_run())
        serve = asyncio.create_task(server.serve())
        while not server.started and not serve.done():  # noqa: ASYNC110 (uvicorn exposes a flag)
            await asyncio.sleep(0.05)
        stop_socket = None
        if server.started:
            stop_socket = await _start_socket_mode(api, socket_mode)
            rows = await summary(
                settings, api, host, port, in_process_worker=with_worker, socket_mode=stop_socket is not None
            )
            print(render(rows), flush=True)  # plain: a log collector gets it unwrapped
        try:
            await serve
        finally:
            if stop_socket is not None:
                await stop_socket()
            if w is not None and worker_task is not None:
                await w.close()
                worker_task.cancel()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        # uvicorn shut down cleanly and re-raised the Ctrl-C: a requested stop, not an error.
        console.print("Handoff stopped.")


@app.command()
def serve(
    host: Host = "127.0.0.1", port: Port = 8000, migrate: Migrate = True, socket_mode: SocketMode = None
) -> None:
    """Run the API (and Slack Socket Mode when SLACK_APP_TOKEN is set)."""
    _configure_logging()
    settings = load_cli_settings()
    _check_bind(settings, host)
    if migrate:
        _migrate(settings)
    _run_api(settings, host, port, with_worker=False, socket_mode=socket_mode)


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="exit once the queue is empty")] = False,
    migrate: Migrate = True,
) -> None:
    """Run an arq worker that executes tasks in the Docker sandbox."""
    from jobs.worker import create_worker
    from web.health import WORKER_HEALTH_INTERVAL_S
    from web.integrations import worker_services

    _configure_logging()
    settings = load_cli_settings()
    if migrate:
        _migrate(settings)
    w = create_worker(
        settings, worker_services(settings), burst=burst, health_check_interval=WORKER_HEALTH_INTERVAL_S
    )
    w.run()


@app.command()
def up(host: Host = "127.0.0.1", port: Port = 8000, socket_mode: SocketMode = None) -> None:
    """API and worker in one process, for a laptop (starts a local Redis if none answers)."""
    from web.startup import LocalRedisError, start_local_redis

    _configure_logging()
    settings = load_cli_settings()
    _check_bind(settings, host)
    try:
        redis_proc = start_local_redis(
            settings.redis_url, Path(".handoff/redis"), shutil.which("redis-server")
        )
    except LocalRedisError as exc:
        fail(str(exc), 2)
    if redis_proc is not None:
        console.print(f"started redis-server (pid {redis_proc.pid}) for {settings.redis_url}")
    try:
        _migrate(settings)
        _run_api(settings, host, port, with_worker=True, socket_mode=socket_mode)
    finally:
        if redis_proc is not None:
            redis_proc.send_signal(signal.SIGTERM)
            redis_proc.wait(10)


# ---------------------------------------------------------------- sandbox, setup, replay, doctor


@sandbox_app.command("build")
def sandbox_build(
    offline: Annotated[bool, typer.Option(help="build with no registry (busybox or debootstrap)")] = False,
    variant: Annotated[
        str, typer.Option(help="minimal (busybox, seconds), debian (debootstrap, a minute) or all")
    ] = "minimal",
    tag: Annotated[str | None, typer.Option(help="image tag (default handoff-sandbox:VARIANT)")] = None,
    if_missing: Annotated[bool, typer.Option(help="skip an image the engine already has")] = False,
) -> None:
    """Build the sandbox images without a registry."""
    import docker
    import docker.errors
    import requests

    from jobs.image import DEFAULT_TAGS, build_offline, image_exists

    if not offline:
        fail(
            "online builds use Docker itself: "
            "docker build -f docker/sandbox.Dockerfile -t handoff-sandbox:debian docker/ (or pass --offline)",
            2,
        )
    variants = ["minimal", "debian"] if variant == "all" else [variant]
    if any(v not in DEFAULT_TAGS for v in variants) or (tag and len(variants) > 1):
        fail("--variant must be minimal, debian or all (and --tag names one image)", 2)
    settings = load_cli_settings()
    try:
        client = docker.DockerClient(base_url=settings.docker_host, version="1.41")
        for v in variants:
            name = tag or DEFAULT_TAGS[v]
            if if_missing and image_exists(client, name):
                console.print(f"{name} is there already")
                continue
            console.print(f"building {name} …")
            console.print(f"built {build_offline(client, variant=v, tag=tag)}")  # type: ignore[arg-type]
    except (HandoffError, docker.errors.DockerException, requests.RequestException) as exc:
        fail(f"sandbox build failed: {_first_line(exc)} (is the Docker engine running? DOCKER_HOST)")


@setup_app.command("github")
def setup_github(
    org: Annotated[str | None, typer.Option(help="create the App in this organisation")] = None,
    port: Annotated[int, typer.Option(help="local port of the setup page (forward it over SSH)")] = 3000,
    name: Annotated[str | None, typer.Option(help="the App's name, unique across GitHub")] = None,
    env: Annotated[Path, typer.Option(help="the .env file the settings are written to")] = Path(".env"),
    key_dir: Annotated[Path, typer.Option(help="where the App's private key file goes")] = Path(".handoff"),
    allow_local_url: Annotated[
        bool, typer.Option(help="allow a loopback HANDOFF_PUBLIC_URL (GitHub cannot deliver webhooks)")
    ] = False,
) -> None:
    """Create the GitHub App from app-manifest.yml in the browser; credentials go to .env."""
    from github_app.manifest import run_setup

    settings = load_cli_settings()
    public = settings.handoff_public_url.rstrip("/")
    host = urlparse(public).hostname or "localhost"
    if is_loopback(host) and not allow_local_url:
        fail(
            f"HANDOFF_PUBLIC_URL is {public}, a loopback URL: GitHub would send webhooks nowhere. "
            "Set it to the https URL GitHub can reach (README: A public URL), or pass --allow-local-url "
            "for an App you only try locally.",
            2,
        )
    if name is None:
        # App names are unique across GitHub: "Handoff" alone is taken.
        name = f"Handoff {org or host}"[:34]
        console.print(f"App name: {name!r} (names are unique across GitHub; --name picks another)")
    console.print(
        f"On a remote server, forward the setup page first: ssh -L {port}:127.0.0.1:{port} <server>, "
        f"then open http://127.0.0.1:{port}/ on your computer."
    )
    try:
        written = asyncio.run(
            run_setup(
                public_url=public,
                web_url=settings.github_web_url,
                api_url=settings.github_api_url,
                org=org,
                port=port,
                name=name,
                env_path=env,
                key_dir=key_dir,
            )
        )
    except (HandoffError, OSError) as exc:
        fail(f"GitHub App setup failed: {_first_line(exc)}")
    console.print(f"GitHub App created; wrote {', '.join(sorted(written))} to {env}")


@app.command()
def replay(
    payload: Annotated[Path, typer.Argument(help="a recorded webhook payload (JSON)")],
    event: Annotated[
        str | None, typer.Option(help="X-GitHub-Event (guessed from the file when omitted)")
    ] = None,
    url: Annotated[
        str, typer.Option(help="the webhook endpoint of a running instance")
    ] = "http://127.0.0.1:8000/github/webhooks",
    delivery: Annotated[str | None, typer.Option(help="X-GitHub-Delivery (a new UUID when omitted)")] = None,
) -> None:
    """Sign and post a recorded GitHub payload to a running instance (like `probot receive`)."""
    import httpx

    from github_app.replay import replay as post_replay

    settings = load_cli_settings()
    if not settings.github_webhook_secrets:
        fail("GITHUB_WEBHOOK_SECRET is not set: nothing to sign with", 2)
    try:
        response = post_replay(
            url, payload, settings.github_webhook_secrets[0], event=event, delivery=delivery
        )
    except OSError as exc:
        fail(f"cannot read {payload}: {exc.strerror or exc}", 2)
    except ValueError as exc:  # not JSON, or no way to tell the event
        fail(f"{payload}: {_first_line(exc)}", 2)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {_first_line(exc) or type(exc).__name__}")
    console.print(f"{response.status_code} {escape(response.text[:200])}")
    raise typer.Exit(0 if response.status_code < 300 else 1)


@app.command()
def doctor() -> None:
    """Check every dependency and integration; exits 1 only when something configured is broken."""
    from web.doctor import run_doctor

    ok = asyncio.run(run_doctor(load_cli_settings(), console))
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
