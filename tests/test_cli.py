"""The ``handoff`` command line, run as a real process against a real instance."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

from core.settings import Settings
from tests.conftest import LiveServer, git, running_worker

ROOT = Path(__file__).resolve().parent.parent


async def handoff(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run ``python -m web ARGS`` and return (exit code, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "web",
        *args,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode()


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
