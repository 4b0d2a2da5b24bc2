"""Probes and start-up: /livez, /readyz (the database and Redis, never Docker), /healthz (everything),
and migrations that several processes may start at once."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.settings import Settings
from tests.support.env import LiveServer, psql_admin

ROOT = Path(__file__).resolve().parent.parent


async def probe(settings: Settings) -> dict[str, httpx.Response]:
    """GET each probe of an app built from ``settings``."""
    from web.app import create_app

    async with LiveServer(create_app(settings)) as server, httpx.AsyncClient(base_url=server.url) as client:
        return {path: await client.get(path) for path in ("/livez", "/readyz", "/healthz")}


async def test_probes_when_everything_answers(settings: Settings) -> None:
    answers = await probe(settings)
    assert answers["/livez"].json() == {"ok": True}
    ready = answers["/readyz"]
    assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database", "redis"}
    assert set(answers["/healthz"].json()["checks"]) == {"database", "redis", "docker"}


async def test_metrics_say_whether_a_worker_reports(sqlite_settings: Settings) -> None:
    from tests.support.env import running_worker
    from tests.support.waiting import wait_until
    from web.app import create_app

    async with (
        LiveServer(create_app(sqlite_settings)) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        assert "handoff_worker_up 0.0" in (await client.get("/metrics")).text
        async with running_worker(sqlite_settings):

            async def reported() -> bool:
                return "handoff_worker_up 1.0" in (await client.get("/metrics")).text

            await wait_until(reported, timeout=30, interval=0.2)


async def test_readyz_needs_no_docker_but_healthz_reports_it(sqlite_settings: Settings) -> None:
    # The API container of a compose deployment has no Docker socket: it is still ready.
    answers = await probe(sqlite_settings.model_copy(update={"docker_host": "unix:///nonexistent.sock"}))
    assert answers["/readyz"].status_code == 200
    health = answers["/healthz"]
    assert health.status_code == 503 and health.json()["checks"]["docker"]["ok"] is False


async def test_readyz_fails_while_redis_or_the_database_is_down(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    answers = await probe(sqlite_settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"}))
    assert answers["/livez"].status_code == 200, "alive, just not ready"
    ready = answers["/readyz"]
    assert ready.status_code == 503 and ready.headers["Retry-After"] == "5"
    assert ready.json()["checks"]["redis"]["ok"] is False and ready.json()["checks"]["database"]["ok"] is True
    gone = "postgresql://handoff:handoff@127.0.0.1:9/nowhere"
    answers = await probe(sqlite_settings.model_copy(update={"database_url": gone}))
    assert answers["/livez"].status_code == 200
    assert (
        answers["/readyz"].status_code == 503
        and answers["/readyz"].json()["checks"]["database"]["ok"] is False
    )


def test_processes_migrating_one_new_database_at_once_all_succeed(postgres_url: str) -> None:
    """An API and workers starting together on a fresh PostgreSQL database take turns."""
    name = f"handoff_mig_{uuid.uuid4().hex[:8]}"
    psql_admin(postgres_url, f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    code = "import sys; from web.migrate import upgrade; upgrade(sys.argv[1])"
    try:
        procs = [
            subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        for proc in procs:
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr[-2000:]
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            tables = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE tablename = 'task'")
            ).scalar_one()
        engine.dispose()
        assert len(versions) == 1 and tables == 1
    finally:
        psql_admin(postgres_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_migrations_are_idempotent(database_url: str) -> None:
    from web.migrate import upgrade

    upgrade(database_url)  # the fixture migrated it already: a second run changes nothing
