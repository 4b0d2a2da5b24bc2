"""Shared fixtures: real Redis, PostgreSQL, SQLite, Docker and git; nothing faked but the platforms.

``make test`` (scripts/test.sh) starts throwaway Redis/PostgreSQL/dockerd when none answers and
exports ``HANDOFF_TEST_REDIS_URL`` and ``HANDOFF_TEST_POSTGRES_URL``. With ``CI=true`` a skipped test
fails the run, so a missing service can never pass silently.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from arq import Worker
from sqlalchemy.engine import make_url

from core.settings import Settings, load_settings
from tests.support.env import SANDBOX_IMAGE, LiveServer, git, psql_admin, running_worker, write_config

# Private Redis and PostgreSQL servers for fault tests (never the shared ones).
pytest_plugins = ["tests.support.services"]


# ---------------------------------------------------------------- CI: a skip is a failure


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if os.environ.get("CI") == "true" and skipped and session.exitstatus == 0:
        session.exitstatus = 1
        if reporter is not None:
            reporter.write_line(f"CI=true: {skipped} test(s) skipped; a skipped test fails CI", red=True)


# ---------------------------------------------------------------- services


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("HANDOFF_TEST_REDIS_URL")
    if not url:
        pytest.skip("HANDOFF_TEST_REDIS_URL is not set (run `make test`)")
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("HANDOFF_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HANDOFF_TEST_POSTGRES_URL is not set (run `make test`)")
    return url


@pytest.fixture(scope="session")
def pg_template(postgres_url: str) -> Iterator[str]:
    """A migrated template database; each test gets a fresh copy in milliseconds."""
    from web.migrate import upgrade

    name = f"handoff_tpl_{uuid.uuid4().hex[:8]}"
    psql_admin(postgres_url, f'CREATE DATABASE "{name}"')
    upgrade(make_url(postgres_url).set(database=name).render_as_string(hide_password=False))
    yield name
    with contextlib.suppress(Exception):
        psql_admin(postgres_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: SQLite and PostgreSQL."""
    if request.param == "sqlite":
        from web.migrate import upgrade

        url = f"sqlite:///{tmp_path / 'handoff.db'}"
        upgrade(url)
        yield url
        return
    postgres = request.getfixturevalue("postgres_url")
    template = request.getfixturevalue("pg_template")
    name = f"handoff_t_{uuid.uuid4().hex[:10]}"
    psql_admin(postgres, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield make_url(postgres).set(database=name).render_as_string(hide_password=False)
    with contextlib.suppress(Exception):
        psql_admin(postgres, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database (for tests that need only one backend)."""
    from web.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'handoff.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    """The offline minimal sandbox image (built once if missing)."""
    import docker

    from jobs.image import build_offline, image_exists

    try:
        client = docker.DockerClient(version="1.41")
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine: {exc}")
    if not image_exists(client, SANDBOX_IMAGE):
        build_offline(client, variant="minimal")
    return SANDBOX_IMAGE


@pytest.fixture(scope="session")
def agent_images(sandbox_image: str) -> dict[str, str]:
    """The Claude Code and Codex images (`make test` builds them first; a no-op when unchanged)."""
    import docker

    from jobs.agent_image import build_agent_image

    client = docker.DockerClient(version="1.41")
    try:
        return {name: build_agent_image(client, name) for name in ("claude-code", "codex")}
    finally:
        client.close()


# ---------------------------------------------------------------- git


@pytest.fixture
def bare_repo(tmp_path: Path) -> Path:
    """A bare repository with a ``main`` branch holding a README and a small script."""
    bare = tmp_path / "remote.git"
    git("init", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git("clone", str(bare), str(seed))
    (seed / "README.md").write_text("# demo\n")
    (seed / "app.sh").write_text("echo hello\n")
    git("add", "-A", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-m", "initial", cwd=seed)
    git("push", "origin", "main", cwd=seed)
    return bare


# ---------------------------------------------------------------- Handoff settings, app, worker


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path, sandbox_image: str) -> Settings:
    """Settings for one test (on SQLite and on PostgreSQL): its own database, queue and workspace."""
    return _settings(database_url, redis_url, tmp_path)


@pytest.fixture
def sqlite_settings(sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str) -> Settings:
    """Settings on SQLite only, for tests whose subject is not the database."""
    return _settings(sqlite_url, redis_url, tmp_path)


def _settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        database_url=database_url,
        redis_url=redis_url,
        handoff_config=write_config(tmp_path / "handoff.yml"),
        handoff_workspace_dir=tmp_path / "workspaces",
        handoff_mirror_dir=tmp_path / "mirrors",
        handoff_queue_name=f"handoff:test:{uuid.uuid4().hex[:8]}",
        handoff_public_url="http://127.0.0.1:8000",
    )


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[LiveServer]:
    """The Handoff API served over real HTTP on loopback."""
    from web.app import create_app

    async with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """A running worker for the test's settings."""
    async with running_worker(settings) as w:
        yield w
