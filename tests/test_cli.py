"""The ``handoff`` command line, run as a real process against a real instance."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from core.settings import Settings
from tests.support.cli import ROOT, handoff
from tests.support.env import LiveServer, git, running_worker


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "HANDOFF_CONFIG": str(settings.handoff_config),
        **extra,
    }


async def test_task_create_follows_the_run_live_and_pushes(
    sqlite_settings: Settings, bare_repo: Path
) -> None:
    from web.app import create_app

    async with LiveServer(create_app(sqlite_settings)) as api, running_worker(sqlite_settings):
        code, out = await handoff(
            "task",
            "create",
            str(bare_repo),
            "echo step-one; echo hi > HI.md",
            env=_env(sqlite_settings, HANDOFF_API_URL=api.url),
        )
        assert code == 0, out
        assert "created task t_" in out and "step-one" in out and "succeeded" in out
        task_id = out.split("created task ")[1].split()[0]
        assert f"branch: handoff/{task_id}" in out
        code, listed = await handoff("task", "list", env=_env(sqlite_settings, HANDOFF_API_URL=api.url))
        assert code == 0 and task_id in listed
        code, logs = await handoff(
            "task", "logs", task_id, "--no-follow", env=_env(sqlite_settings, HANDOFF_API_URL=api.url)
        )
        assert code == 0 and "step-one" in logs
    assert git("--git-dir", str(bare_repo), "show", f"handoff/{task_id}:HI.md") == "hi"


async def test_cli_reports_an_unreachable_api(sqlite_settings: Settings) -> None:
    code, out = await handoff("task", "list", env=_env(sqlite_settings, HANDOFF_API_URL="http://127.0.0.1:9"))
    assert code == 1
    assert "cannot reach the Handoff API" in out and "handoff up" in out


async def test_doctor_names_each_failure_and_what_to_do(sqlite_settings: Settings) -> None:
    code, out = await handoff("doctor", env=_env(sqlite_settings))
    assert code == 0, out
    assert "ok   database" in out and "ok   redis" in out and "ok   docker" in out
    code, out = await handoff(
        "doctor",
        env=_env(sqlite_settings, REDIS_URL="redis://127.0.0.1:9/0", DOCKER_HOST="unix:///nonexistent.sock"),
    )
    assert code == 1
    assert "FAIL redis" in out and "start Redis or set REDIS_URL" in out
    assert "FAIL docker" in out and "start dockerd or set DOCKER_HOST" in out


async def test_bad_settings_name_the_variable(tmp_path: Path) -> None:
    code, out = await handoff("db", "upgrade", env={"DATABASE_URL": "mysql://nope"})
    assert code == 2 and "DATABASE_URL" in out
    code, out = await handoff(
        "db",
        "upgrade",
        env={"DATABASE_URL": "sqlite:///x.db", "HANDOFF_CONFIG": str(tmp_path / "missing.yml")},
    )
    assert code != 0


async def test_db_upgrade_and_serve_refuses_public_bind_without_token(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    code, out = await handoff("db", "upgrade", env={"DATABASE_URL": f"sqlite:///{db}"})
    assert code == 0, out
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"task", "run", "runevent", "delivery", "outbox", "auditentry"} <= tables
    code, out = await handoff("serve", "--host", "0.0.0.0", env={"DATABASE_URL": f"sqlite:///{db}"})
    assert code == 2 and "HANDOFF_API_TOKEN" in out


# ---------------------------------------------------------------- what a first-time user runs into


def one_line(out: str) -> str:
    """The output, asserted to be a single readable line: no traceback, no raw JSON."""
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert "Traceback" not in out and not lines[0].lstrip().startswith("{"), out
    return lines[0]


async def test_task_show_is_readable_exit_codes_follow_the_state_and_prefixes_work(
    sqlite_settings: Settings, bare_repo: Path
) -> None:
    from web.app import create_app

    async with LiveServer(create_app(sqlite_settings)) as api, running_worker(sqlite_settings):
        env = _env(sqlite_settings, HANDOFF_API_URL=api.url)
        code, out = await handoff("task", "create", str(bare_repo), "echo nope; exit 3", env=env)
        assert code == 1, out  # the task failed: so does the command
        failed = out.split("created task ")[1].split()[0]
        assert f"{failed}: failed" in out
        code, out = await handoff("task", "create", str(bare_repo), "echo fine > F.md", env=env)
        assert code == 0, out
        good = out.split("created task ")[1].split()[0]

        code, shown = await handoff("task", "show", failed[:10], env=env)  # a unique prefix
        assert code == 1, shown
        assert shown.splitlines()[0].split() == [failed, "failed"]
        assert "runs (1)" in shown and "#1 r_" in shown and "echo nope; exit 3" in shown
        code, raw = await handoff("task", "show", failed, "--json", env=env)
        assert code == 1 and json.loads(raw)["id"] == failed and json.loads(raw)["runs"]
        code, shown = await handoff("task", "show", good, env=env)
        assert code == 0 and f"handoff/{good}" in shown and "succeeded" in shown

        code, out = await handoff("task", "show", "t_", env=env)  # both tasks start with it
        assert code == 1 and "is ambiguous" in one_line(out) and failed in out and good in out
        code, out = await handoff("task", "show", "t_0000nothing", env=env)
        assert code == 1 and "no task 't_0000nothing'" in one_line(out)
        code, out = await handoff("task", "cancel", "t_0000nothing", env=env)
        assert code == 1 and "no task" in one_line(out)
        code, out = await handoff("task", "create", str(bare_repo), "x", "--agent", "nope", env=env)
        assert code == 1 and "unknown agent profile 'nope'" in one_line(out)
        code, out = await handoff("task", "retry", good[:12], env=env)
        assert code == 0 and f"{good}: queued" in out


async def test_ctrl_c_while_following_says_the_task_keeps_running(
    sqlite_settings: Settings, bare_repo: Path
) -> None:
    from web.app import create_app

    async with LiveServer(create_app(sqlite_settings)) as api, running_worker(sqlite_settings):
        env = {**os.environ, "COLUMNS": "200", **_env(sqlite_settings, HANDOFF_API_URL=api.url)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "web",
            "task",
            "create",
            str(bare_repo),
            "echo started; sleep 30",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        seen = b""
        while b"started" not in seen:  # the run is streaming: now the user presses Ctrl-C
            chunk = await asyncio.wait_for(proc.stdout.read(200), 60)
            assert chunk, seen
            seen += chunk
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        out = (seen + rest).decode()
        task_id = out.split("created task ")[1].split()[0]
        assert proc.returncode == 130, out
        assert "the task keeps running" in out and f"handoff task logs {task_id}" in out
        assert "Traceback" not in out and "KeyboardInterrupt" not in out
        code, shown = await handoff(
            "task", "show", task_id, env=_env(sqlite_settings, HANDOFF_API_URL=api.url)
        )
        assert code == 0 and "running" in shown.splitlines()[0]
        await handoff("task", "cancel", task_id, env=_env(sqlite_settings, HANDOFF_API_URL=api.url))


async def test_replay_and_setup_errors_are_one_line(sqlite_settings: Settings, tmp_path: Path) -> None:
    env = _env(sqlite_settings, GITHUB_WEBHOOK_SECRET="s3cret")
    code, out = await handoff("replay", str(tmp_path / "missing.json"), env=env)
    assert code == 2 and "cannot read" in one_line(out) and "missing.json" in out
    (tmp_path / "bad.json").write_text("{not json")
    code, out = await handoff("replay", str(tmp_path / "bad.json"), env=env)
    assert code == 2 and "bad.json" in one_line(out)
    (tmp_path / "issues.json").write_text("{}")
    code, out = await handoff(
        "replay", str(tmp_path / "issues.json"), "--url", "http://127.0.0.1:9/x", env=env
    )
    assert code == 1 and "cannot reach http://127.0.0.1:9/x" in one_line(out)
    # A GitHub App whose webhooks would go to localhost is refused, with what to do instead.
    code, out = await handoff("setup", "github", env=_env(sqlite_settings))
    assert code == 2 and "loopback" in one_line(out) and "--allow-local-url" in out


async def test_handoff_yml_in_the_working_directory_is_read_by_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HANDOFF_CONFIG"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'h.db'}"
    (tmp_path / "handoff.yml").write_text(
        "profiles:\n  shell: {image: handoff-sandbox:minimal}\ngithub:\n  agents: [shell, claude-code]\n"
    )
    code, out = await handoff("db", "upgrade", env=env, cwd=tmp_path)
    assert code == 2, out
    assert "github.agents names no profile: claude-code" in one_line(out) and "handoff.yml" in out
    (tmp_path / "handoff.yml").write_text("profiles:\n  shell: {image: handoff-sandbox:minimal}\n")
    code, out = await handoff("db", "upgrade", env=env, cwd=tmp_path)
    assert code == 0, out


def test_every_option_and_argument_has_help() -> None:
    import typer.main

    from web.cli import app

    missing = []

    def walk(command: Any, path: str) -> None:  # typer's own (vendored) click objects
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")
            return
        assert command.help, f"{path} has no description"
        for param in command.params:
            if param.name != "help" and not getattr(param, "help", None):
                missing.append(f"{path} {param.name}")

    walk(typer.main.get_command(app), "handoff")
    assert missing == []


async def test_task_logs_prints_every_page_of_events(sqlite_settings: Settings, bare_repo: Path) -> None:
    from web.app import create_app

    async with LiveServer(create_app(sqlite_settings)) as api, running_worker(sqlite_settings):
        env = _env(sqlite_settings, HANDOFF_API_URL=api.url)
        code, out = await handoff("task", "create", str(bare_repo), "seq 1 1500 | sed s/^/line-/", env=env)
        assert code == 0, out[-2000:]
        task_id = out.split("created task ")[1].split()[0]
        code, logs = await handoff("task", "logs", task_id, "--no-follow", env=env, timeout=120)
    assert code == 0
    printed = [line for line in logs.splitlines() if " line-" in line]
    assert len(printed) == 1500 and printed[-1].endswith("line-1500"), logs[-500:]


async def test_serve_connects_slack_in_socket_mode_and_prints_one_summary(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    """What the compose `api` service runs: with SLACK_APP_TOKEN set it connects over a WebSocket."""
    from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, FakeSlack, wait_for_socket
    from tests.support.env import free_port

    fake = FakeSlack()
    async with LiveServer(fake.app) as slack:
        fake.bind(slack.url)
        port = free_port()
        env = {
            **os.environ,
            "COLUMNS": "200",
            "PYTHONPATH": str(ROOT),
            **_env(sqlite_settings),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_APP_TOKEN": APP_TOKEN,
            "SLACK_API_URL": fake.api_url,
            "HANDOFF_QUEUE_NAME": sqlite_settings.handoff_queue_name,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "web", "serve", "--port", str(port), "--no-migrate",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        seen = b""
        try:
            while b"  config" not in seen:  # the summary block's last line
                chunk = await asyncio.wait_for(proc.stdout.read(4096), 60)
                assert chunk, seen.decode()
                seen += chunk
            await wait_for_socket(fake)
            assert fake.of("apps.connections.open")
        finally:
            proc.send_signal(signal.SIGINT)
            rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        out = (seen + rest).decode()
    assert out.count("Handoff is up") == 1
    assert f"http://127.0.0.1:{port}" in out and "/login?token=" in out
    assert "Slack    on, Socket Mode" in out and "GitHub   off" in out
    assert "worker   none reported" in out  # serve runs no worker; none runs for this test's queue
    assert proc.returncode == 0 and "Handoff stopped." in out and "Traceback" not in out
