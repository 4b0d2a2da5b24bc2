"""The ``handoff`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import httpx
import typer
from rich.console import Console
from rich.table import Table

from core.errors import ConfigError
from core.settings import Settings, load_settings
from web.deps import is_loopback

app = typer.Typer(
    help="Handoff: hand coding work to AI agents from GitHub, Slack and the API.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
task_app = typer.Typer(help="Create and follow tasks through the REST API.", no_args_is_help=True)
sandbox_app = typer.Typer(help="The agent sandbox image.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(task_app, name="task")
app.add_typer(sandbox_app, name="sandbox")

console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    """Settings and handoff.yml, validated now, with a message that names what is wrong."""
    from core.config import load_config

    try:
        settings = load_settings()
        load_config(settings.handoff_config)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    return settings


def _configure_logging() -> None:
    import logging

    level = os.environ.get("HANDOFF_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # arq logs every job start and end, the reaper's every few seconds among them.
        logging.getLogger("arq.worker").setLevel(logging.WARNING)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply database migrations."""
    from web.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    console.print(f"database at revision {revision}")


def _check_bind(settings: Settings, host: str) -> None:
    if settings.handoff_api_token is None and not is_loopback(host):
        err.print(
            f"[red]Refusing to bind {host} without HANDOFF_API_TOKEN: set a token or bind 127.0.0.1.[/red]"
        )
        raise typer.Exit(2)


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the API (applies migrations first)."""
    import uvicorn

    from web.app import create_app
    from web.migrate import upgrade_when_reachable

    _configure_logging()
    settings = _settings()
    _check_bind(settings, host)
    upgrade_when_reachable(settings.database_url)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", log_config=None)


@app.command()
def worker(burst: bool = False) -> None:
    """Run an arq worker that executes tasks in the Docker sandbox."""
    from jobs.worker import create_worker
    from web.integrations import worker_context
    from web.migrate import upgrade_when_reachable

    _configure_logging()
    settings = _settings()
    upgrade_when_reachable(settings.database_url)
    w = create_worker(settings, worker_context(settings), burst=burst)
    w.run()


def _redis_answers(url: str) -> bool:
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


def _start_local_redis(url: str, state_dir: Path) -> subprocess.Popen[bytes] | None:
    """Start ``redis-server`` as a child process when ``url`` (on loopback) does not answer."""
    if _redis_answers(url):
        return None
    parsed = urlparse(url)
    host = parsed.hostname or "localhost"
    if not is_loopback(host):
        err.print(f"[red]REDIS_URL {url} does not answer and is not local; start Redis there.[/red]")
        raise typer.Exit(2)
    binary = shutil.which("redis-server")
    if binary is None:
        err.print(
            "[red]Redis does not answer and redis-server is not installed (apt-get install redis-server).[/red]"
        )
        raise typer.Exit(2)
    state_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        # preexec_fn: the server dies with us even when a signal kills us (uvicorn re-raises SIGTERM).
        preexec_fn=_die_with_parent,
        args=[
            binary,
            "--port",
            str(parsed.port or 6379),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(state_dir),
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(50):
        if _redis_answers(url):
            console.print(f"started redis-server (pid {proc.pid}) for {url}")
            return proc
        time.sleep(0.1)
    proc.terminate()
    err.print("[red]redis-server did not start[/red]")
    raise typer.Exit(2)


async def _start_slack_socket_mode(api: Any, settings: Settings) -> Callable[[], Awaitable[None]] | None:
    """Socket Mode (for teams without a public URL) when the Slack bot has an app-level token."""
    if settings.slack_app_token is None:
        return None
    slack = next((i for i in api.state.services.integrations if i.name == "slack"), None)
    if slack is None:
        return None
    from bot.socket import start_socket_mode

    stop: Callable[[], Awaitable[None]] = await start_socket_mode(slack)
    console.print("Slack: connected in Socket Mode")
    return stop


@app.command()
def up(host: str = "127.0.0.1", port: int = 8000) -> None:
    """API and worker in one process, for a laptop (starts a local Redis if needed)."""
    import uvicorn

    from jobs.worker import create_worker
    from web.app import create_app
    from web.integrations import worker_context
    from web.migrate import upgrade_when_reachable

    _configure_logging()
    settings = _settings()
    _check_bind(settings, host)
    redis_proc = _start_local_redis(settings.redis_url, Path(".handoff/redis"))
    try:
        upgrade_when_reachable(settings.database_url)

        async def main() -> None:
            api = create_app(settings)
            # log_config=None keeps our logging set-up (uvicorn's own would replace it).
            server = uvicorn.Server(
                uvicorn.Config(api, host=host, port=port, log_level="info", log_config=None)
            )
            w = create_worker(settings, worker_context(settings), handle_signals=False)
            worker_task = asyncio.create_task(w.async_run())
            serve = asyncio.create_task(server.serve())
            while not server.started and not serve.done():  # noqa: ASYNC110 (uvicorn exposes a flag)
                await asyncio.sleep(0.05)
            stop_socket = await _start_slack_socket_mode(api, settings)
            console.print(f"Handoff is up on http://{host}:{port} (API docs at /docs)")
            try:
                await serve
            finally:
                if stop_socket is not None:
                    await stop_socket()
                await w.close()
                worker_task.cancel()

        asyncio.run(main())
    finally:
        if redis_proc is not None:
            redis_proc.send_signal(signal.SIGTERM)
            redis_proc.wait(10)


# ---------------------------------------------------------------- tasks through the REST API


def _client() -> httpx.Client:
    settings = _settings()
    base = os.environ.get("HANDOFF_API_URL", "http://127.0.0.1:8000")
    headers = {}
    if settings.handoff_api_token is not None:
        headers["Authorization"] = f"Bearer {settings.handoff_api_token.get_secret_value()}"
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def _call(method: str, path: str, **kwargs: Any) -> Any:
    with _client() as client:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            err.print(
                f"[red]cannot reach the Handoff API at {client.base_url}: {exc}[/red] (is `handoff up` running?)"
            )
            raise typer.Exit(1) from exc
    if response.status_code >= 400:
        err.print(f"[red]{response.status_code}: {response.text}[/red]")
        raise typer.Exit(1)
    return response.json()


@task_app.command("create")
def task_create(
    repo: Annotated[str, typer.Argument(help="local path or git URL")],
    instructions: Annotated[str, typer.Argument(help="what the agent should do")],
    agent: str | None = None,
    base_ref: str | None = None,
    follow: Annotated[bool, typer.Option(help="follow the run live")] = True,
) -> None:
    """Create a task (and follow it live)."""
    if Path(repo).exists():
        repo = str(Path(repo).resolve())
    body = {"repo": repo, "instructions": instructions, "agent": agent, "base_ref": base_ref}
    task = _call("POST", "/api/tasks", json={k: v for k, v in body.items() if v is not None})
    console.print(f"created task [bold]{task['id']}[/bold] ({task['state']})")
    if follow:
        _follow_task(task["id"])


@task_app.command("list")
def task_list(state: str | None = None, repo: str | None = None, limit: int = 20) -> None:
    """List recent tasks."""
    params = {k: v for k, v in {"state": state, "repo": repo, "limit": limit}.items() if v is not None}
    page = _call("GET", "/api/tasks", params=params)
    table = Table("id", "state", "repo", "created", "summary")
    for t in page["items"]:
        table.add_row(
            t["id"],
            t["state"],
            t["repo"],
            t["created_at"][:19],
            (t.get("summary") or t.get("state_reason") or "")[:60],
        )
    console.print(table)
    console.print(f"{page['total']} task(s)")


@task_app.command("show")
def task_show(task_id: str) -> None:
    """Show a task and its runs."""
    console.print_json(json.dumps(_call("GET", f"/api/tasks/{task_id}")))


@task_app.command("logs")
def task_logs(task_id: str, follow: bool = True) -> None:
    """Print the events of the task's latest run (following it while it runs)."""
    _follow_task(task_id, follow=follow)


@task_app.command("cancel")
def task_cancel(task_id: str) -> None:
    """Cancel a task."""
    task = _call("POST", f"/api/tasks/{task_id}/cancel")
    console.print(f"{task['id']}: {task['state']}{' (stopping)' if task.get('cancel_requested') else ''}")


@task_app.command("retry")
def task_retry(task_id: str, follow: bool = False) -> None:
    """Queue a new run of an ended task."""
    task = _call("POST", f"/api/tasks/{task_id}/retry")
    console.print(f"{task['id']}: {task['state']}")
    if follow:
        _follow_task(task_id)


def _print_event(event: dict[str, Any]) -> None:
    kind, data = event["type"], event.get("data") or {}
    style = {"error": "red", "status": "bold cyan", "result": "bold green", "progress": "yellow"}.get(
        kind, ""
    )
    text = data.get("text") if kind == "log" else json.dumps(data)
    console.print(
        f"[dim]{event['ts'][11:19]}[/dim] [{style}]{kind:8}[/{style}] {text}"
        if style
        else f"[dim]{event['ts'][11:19]}[/dim] {kind:8} {text}",
        highlight=False,
    )


def _follow_task(task_id: str, follow: bool = True) -> None:
    """Wait for the task's run to start, then stream its events until it ends."""
    with console.status("waiting for a worker…") as status:
        while True:
            task = _call("GET", f"/api/tasks/{task_id}")
            if task["runs"]:
                break
            if task["state"] not in ("queued", "waiting") or not follow:
                console.print(f"{task_id}: {task['state']} {task.get('state_reason') or ''}")
                return
            time.sleep(0.3)
        status.update("running…")
    run_id = task["runs"][-1]["id"]
    if not follow:
        after, more = 0, True
        while more:  # the API pages the events (by sequence number)
            page = _call("GET", f"/api/runs/{run_id}/events", params={"after": after, "limit": 1000})
            for event in page["items"]:
                _print_event(event)
            after, more = page["next_after"], page["more"]
        return
    with (
        _client() as client,
        client.stream(
            "GET", f"/api/runs/{run_id}/events", headers={"Accept": "text/event-stream"}, timeout=None
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = json.loads(line[6:])
                if "outcome" in payload and "type" not in payload:
                    break
                _print_event(payload)
    final = _call("GET", f"/api/tasks/{task_id}")
    colour = "green" if final["state"] == "succeeded" else "red"
    console.print(
        f"[{colour}]{task_id}: {final['state']}[/{colour}] {final.get('state_reason') or final.get('summary') or ''}"
    )
    if final.get("branch"):
        console.print(f"branch: {final['branch']}")


# ---------------------------------------------------------------- sandbox and doctor


@sandbox_app.command("build")
def sandbox_build(
    offline: Annotated[bool, typer.Option(help="build with no registry (busybox or debootstrap)")] = False,
    variant: Annotated[str, typer.Option(help="minimal (busybox) or debian (debootstrap)")] = "minimal",
    tag: str | None = None,
) -> None:
    """Build the sandbox image."""
    from jobs.image import build_offline

    if not offline:
        err.print(
            "Online builds: `docker build -f docker/sandbox.Dockerfile -t handoff-sandbox:debian docker/`"
        )
        raise typer.Exit(2)
    if variant not in ("minimal", "debian"):
        err.print("variant must be minimal or debian")
        raise typer.Exit(2)
    settings = _settings()
    built = build_offline(settings.docker_host, variant=variant, tag=tag)  # type: ignore[arg-type]
    console.print(f"built {built}")


setup_app = typer.Typer(help="Connect Handoff to GitHub and Slack.", no_args_is_help=True)
app.add_typer(setup_app, name="setup")


@setup_app.command("github")
def setup_github(
    org: Annotated[str | None, typer.Option(help="create the App in this organisation")] = None,
    port: Annotated[int, typer.Option(help="local port of the setup page")] = 3000,
    name: Annotated[str | None, typer.Option(help="the App's name")] = None,
    env: Annotated[Path, typer.Option(help="where to write the credentials")] = Path(".env"),
) -> None:
    """Create the GitHub App from app-manifest.yml in the browser; credentials go to .env."""
    from github_app.manifest import run_setup

    settings = _settings()
    written = asyncio.run(
        run_setup(
            public_url=settings.handoff_public_url,
            web_url=settings.github_web_url,
            api_url=settings.github_api_url,
            org=org,
            port=port,
            name=name,
            env_path=env,
        )
    )
    console.print(f"GitHub App created; wrote {', '.join(sorted(written))} to {env}")


@app.command()
def replay(
    payload: Annotated[Path, typer.Argument(help="a recorded webhook payload (JSON)")],
    event: Annotated[
        str | None, typer.Option(help="X-GitHub-Event (guessed from the file when omitted)")
    ] = None,
    url: str = "http://127.0.0.1:8000/github/webhooks",
    delivery: str | None = None,
) -> None:
    """Sign and post a recorded GitHub payload to a running instance (like `probot receive`)."""
    from github_app.replay import replay as post_replay

    settings = _settings()
    if not settings.github_webhook_secrets:
        err.print("[red]GITHUB_WEBHOOK_SECRET is not set: nothing to sign with.[/red]")
        raise typer.Exit(2)
    response = post_replay(url, payload, settings.github_webhook_secrets[0], event=event, delivery=delivery)
    console.print(f"{response.status_code} {response.text[:200]}")
    raise typer.Exit(0 if response.status_code < 300 else 1)


@app.command()
def doctor() -> None:
    """Check every dependency and say what to do about each failure."""
    from web.doctor import run_doctor

    ok = asyncio.run(run_doctor(_settings(), console))
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
