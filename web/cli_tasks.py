"""``handoff task ...``: create, follow and inspect tasks through the REST API.

Every failure is one readable line on stderr (never raw JSON or a traceback); the exit status says
how the task ended: 0 succeeded (or still going), 1 failed, cancelled, timed out or over budget.
Task ids may be abbreviated to any unique prefix.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from core.settings import Settings
from web.cli_settings import err, escape, fail, load_cli_settings

task_app = typer.Typer(help="Create and follow tasks through the REST API.", no_args_is_help=True)
console = Console(highlight=False)

DEFAULT_API_URL = "http://127.0.0.1:8000"
ENDED_BADLY = frozenset({"failed", "cancelled", "timed_out", "budget_exceeded"})
ENDED = ENDED_BADLY | {"succeeded"}
TaskId = Annotated[str, typer.Argument(help="a task id, or any unique start of one (t_3f9)")]


def exit_code(state: str) -> int:
    """The exit status for a task in ``state``: 1 when it ended badly, else 0."""
    return 1 if state in ENDED_BADLY else 0


class Api:
    """The REST API at ``HANDOFF_API_URL``, with errors turned into one line each."""

    def __init__(self, settings: Settings) -> None:
        self.base = os.environ.get("HANDOFF_API_URL", DEFAULT_API_URL).rstrip("/")
        headers = {}
        if settings.handoff_api_token is not None:
            headers["Authorization"] = f"Bearer {settings.handoff_api_token.get_secret_value()}"
        self.client = httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def unreachable(self, exc: httpx.HTTPError) -> NoReturn:
        """Exit with a line that says which URL does not answer and what to do."""
        reasons: dict[type[httpx.HTTPError], str] = {
            httpx.ConnectError: "connection refused or host unknown",
            httpx.ConnectTimeout: "no answer (connect timeout)",
            httpx.ReadTimeout: "no answer within 30 s",
        }
        reason = reasons.get(type(exc), f"{type(exc).__name__}: {exc}")
        fail(
            f"cannot reach the Handoff API at {self.base}: {reason} "
            "(is `handoff up` running? HANDOFF_API_URL sets the address)"
        )

    def call(self, method: str, path: str, *, not_found: str | None = None, **kwargs: Any) -> Any:
        """Send a request and return the JSON body; exit with one line on any error."""
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.unreachable(exc)
        if response.status_code == 404 and not_found is not None:
            fail(not_found)
        if response.status_code >= 400:
            fail(describe_error(response))
        return response.json()

    def task(self, ref: str) -> dict[str, Any]:
        """The task ``ref`` names: a full id or a unique prefix of one."""
        try:
            response = self.client.get(f"/api/tasks/{ref}")
        except httpx.HTTPError as exc:
            self.unreachable(exc)
        if response.status_code != 404:
            if response.status_code >= 400:
                fail(describe_error(response))
            body: dict[str, Any] = response.json()
            return body
        ids: list[str] = self.call("GET", "/api/task-ids", params={"prefix": ref})["ids"]
        if not ids:
            fail(f"no task {ref!r}: no task id starts with it (`handoff task list` shows recent ones)")
        if len(ids) > 1:
            fail(f"{ref!r} is ambiguous: it starts {', '.join(ids)}{', …' if len(ids) >= 5 else ''}")
        found: dict[str, Any] = self.call("GET", f"/api/tasks/{ids[0]}")
        return found

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()


def describe_error(response: httpx.Response) -> str:
    """One line for an error answer: FastAPI's ``detail`` (validation errors field by field)."""
    try:
        detail: Any = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text.strip().splitlines()[0][:200] if response.text.strip() else None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            where = ".".join(str(p) for p in item.get("loc", [])[1:]) if isinstance(item, dict) else ""
            message = item.get("msg", item) if isinstance(item, dict) else item
            parts.append(f"{where}: {message}" if where else str(message))
        detail = "; ".join(parts)
    hint = {
        401: " (set HANDOFF_API_TOKEN to the server's token)",
        503: " (the server is up but a dependency is not; `handoff doctor` says which)",
    }.get(response.status_code, "")
    return f"{response.status_code} {response.reason_phrase}: {detail or 'no details'}{hint}"


def _api() -> Api:
    return Api(load_cli_settings())


@task_app.command("create")
def task_create(
    repo: Annotated[str, typer.Argument(help="a local repository path or a git URL")],
    instructions: Annotated[str, typer.Argument(help="what the agent should do")],
    agent: Annotated[str | None, typer.Option(help="agent profile (default: handoff.yml's)")] = None,
    base_ref: Annotated[str | None, typer.Option(help="branch or commit to start from")] = None,
    follow: Annotated[bool, typer.Option(help="stream the run live until the task ends")] = True,
) -> None:
    """Create a task (and follow it live); exits 1 when it fails or is cancelled."""
    if Path(repo).exists():
        repo = str(Path(repo).resolve())
    body = {"repo": repo, "instructions": instructions, "agent": agent, "base_ref": base_ref}
    api = _api()
    task = api.call("POST", "/api/tasks", json={k: v for k, v in body.items() if v is not None})
    console.print(f"created task [bold]{task['id']}[/bold] ({task['state']})")
    if follow:
        raise typer.Exit(follow_task(api, task["id"]))


@task_app.command("list")
def task_list(
    state: Annotated[str | None, typer.Option(help="only tasks in this state (e.g. failed)")] = None,
    repo: Annotated[str | None, typer.Option(help="only tasks on this repository")] = None,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
) -> None:
    """List recent tasks, newest first."""
    params = {k: v for k, v in {"state": state, "repo": repo, "limit": limit}.items() if v is not None}
    page = _api().call("GET", "/api/tasks", params=params)
    table = Table("id", "state", "repo", "created", "summary or reason")
    for t in page["items"]:
        note = t.get("summary") or t.get("state_reason") or ""
        table.add_row(t["id"], t["state"], t["repo"], t["created_at"][:19], escape(note[:60]))
    console.print(table)
    console.print(f"{page['total']} task(s)")


@task_app.command("show")
def task_show(
    task_id: TaskId,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON (for scripts)")] = False,
) -> None:
    """Show a task and its runs; exits 1 when it failed or was cancelled."""
    task = _api().task(task_id)
    if as_json:
        print(json.dumps(task, indent=2))
    else:
        print_task(task)
    raise typer.Exit(exit_code(task["state"]))


def print_task(task: dict[str, Any]) -> None:
    """A readable summary of a task and its runs."""
    colour = "green" if task["state"] == "succeeded" else "red" if task["state"] in ENDED_BADLY else "yellow"
    console.print(f"[bold]{task['id']}[/bold]  [{colour}]{task['state']}[/{colour}]")
    first_line = (task.get("instructions") or "").strip().splitlines() or [""]
    rows = [
        ("repo", task["repo"] + (f" (from {task['base_ref']})" if task.get("base_ref") else "")),
        ("agent", task.get("agent")),
        (
            "requested",
            f"{task.get('source')} by {task.get('requester') or 'unknown'}, {task['created_at'][:19]}",
        ),
        (
            "instructions",
            first_line[0][:200] + (" …" if len(first_line) > 1 or len(first_line[0]) > 200 else ""),
        ),
        ("reason", task.get("state_reason")),
        ("summary", task.get("summary")),
        ("branch", task.get("branch")),
        ("pull request", task.get("pr_url")),
    ]
    for name, value in rows:
        if value:
            console.print(f"  {name:13} {escape(str(value))}")
    runs = task.get("runs") or []
    if runs:
        console.print(f"  runs ({len(runs)})")
    for run in runs:
        took = f"{run['duration_s']:.1f} s" if run.get("duration_s") is not None else "running"
        usage = f"{run.get('tokens_in', 0)}/{run.get('tokens_out', 0)} tokens, ${run.get('cost_usd', 0):.4f}"
        line = f"    #{run['attempt']} {run['id']}  {run['outcome']:16} {took:>9}  {usage}"
        if run.get("error"):
            line += f"  {run['error'].splitlines()[0][:120]}"
        console.print(escape(line))
    if task["state"] not in ENDED:
        console.print(f"  follow it: handoff task logs {task['id']}")


@task_app.command("logs")
def task_logs(
    task_id: TaskId,
    follow: Annotated[bool, typer.Option(help="keep streaming until the task ends")] = True,
) -> None:
    """Print the events of the task's runs (following it while it runs)."""
    api = _api()
    task = api.task(task_id)
    if follow:
        raise typer.Exit(follow_task(api, task["id"]))
    if task["runs"]:
        run_id, after, more = task["runs"][-1]["id"], 0, True
        while more:  # the API pages the events by sequence number
            page = api.call("GET", f"/api/runs/{run_id}/events", params={"after": after, "limit": 1000})
            for event in page["items"]:
                print_event(event)
            after, more = page.get("next_after", after), bool(page.get("more"))
    console.print(f"{task['id']}: {task['state']} {escape(task.get('state_reason') or '')}")
    raise typer.Exit(exit_code(task["state"]))


@task_app.command("cancel")
def task_cancel(task_id: TaskId) -> None:
    """Cancel a task (a running container is stopped within seconds)."""
    api = _api()
    task = api.call("POST", f"/api/tasks/{api.task(task_id)['id']}/cancel")
    console.print(f"{task['id']}: {task['state']}{' (stopping)' if task.get('cancel_requested') else ''}")


@task_app.command("retry")
def task_retry(
    task_id: TaskId,
    follow: Annotated[bool, typer.Option(help="stream the new run until the task ends")] = False,
) -> None:
    """Queue a new run of an ended task."""
    api = _api()
    task = api.call("POST", f"/api/tasks/{api.task(task_id)['id']}/retry")
    console.print(f"{task['id']}: {task['state']}")
    if follow:
        raise typer.Exit(follow_task(api, task["id"]))


def print_event(event: dict[str, Any]) -> None:
    """One event as one line: time, type, text."""
    kind, data = event["type"], event.get("data") or {}
    style = {"error": "red", "status": "bold cyan", "result": "bold green", "progress": "yellow"}.get(kind)
    text = data.get("text") if kind == "log" else json.dumps(data)
    label = f"[{style}]{kind:8}[/{style}]" if style else f"{kind:8}"
    # soft_wrap: one event is one line, whatever the terminal's width (or a pipe's, or TERM=dumb's).
    console.print(f"[dim]{event['ts'][11:19]}[/dim] {label} {escape(str(text))}", soft_wrap=True)


def _stream_run(api: Api, run_id: str) -> None:
    """Print a run's events as they come; reconnect where it left off if the stream breaks."""
    last = 0
    for attempt in range(30):
        try:
            with api.client.stream(
                "GET",
                f"/api/runs/{run_id}/events",
                headers={"Accept": "text/event-stream", "Last-Event-ID": str(last)},
                timeout=httpx.Timeout(30, read=None),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    fail(describe_error(response))
                for line in response.iter_lines():
                    if line.startswith("id: ") and line[4:].isdigit():
                        last = int(line[4:])
                    elif line.startswith("data: "):
                        payload = json.loads(line[6:])
                        if "outcome" in payload and "type" not in payload:
                            return
                        print_event(payload)
            return
        except httpx.HTTPError as exc:
            if attempt == 29:
                api.unreachable(exc)
            time.sleep(1)


def follow_task(api: Api, task_id: str) -> int:
    """Stream each run of the task until it ends; return its exit status (130 on Ctrl-C)."""
    try:
        seen: set[str] = set()
        with console.status("waiting for a worker…"):
            while True:
                task = api.call("GET", f"/api/tasks/{task_id}")
                fresh = [r for r in task["runs"] if r["id"] not in seen]
                if fresh:
                    break
                if task["state"] in ENDED:
                    break
                time.sleep(0.3)
        while fresh:
            for run in fresh:
                seen.add(run["id"])
                _stream_run(api, run["id"])
            task = api.call("GET", f"/api/tasks/{task_id}")
            fresh = [r for r in task["runs"] if r["id"] not in seen]
            while not fresh and task["state"] not in ENDED:  # a retry is queued: wait for its run
                time.sleep(0.5)
                task = api.call("GET", f"/api/tasks/{task_id}")
                fresh = [r for r in task["runs"] if r["id"] not in seen]
    except KeyboardInterrupt:
        err.print(
            f"\nstopped following {task_id}; the task keeps running. "
            f"Follow it again: handoff task logs {task_id} · stop it: handoff task cancel {task_id}"
        )
        return 130
    colour = "green" if task["state"] == "succeeded" else "red"
    note = task.get("state_reason") or task.get("summary") or ""
    console.print(f"[{colour}]{task_id}: {task['state']}[/{colour}] {escape(note)}")
    if task.get("branch"):
        console.print(f"branch: {task['branch']}")
    if task.get("pr_url"):
        console.print(f"pull request: {task['pr_url']}")
    return exit_code(task["state"])
