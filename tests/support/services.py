"""Redis and PostgreSQL servers of a test's own, which it may stop, restart and wipe.

The shared services (``HANDOFF_TEST_REDIS_URL`` / ``HANDOFF_TEST_POSTGRES_URL``) serve every test
run on the machine at once; a fault test must never stop them. These fixtures start private
servers from the same Debian binaries (``redis-server``, ``/usr/lib/postgresql/*/bin``) on free
loopback ports with their own data directories. Loaded as a pytest plugin by ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.env import free_port


@dataclass
class PrivateRedis:
    """A ``redis-server`` without persistence: a restart comes back empty, as after a crash."""

    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(200):
            ping = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True)
            if ping.stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def stop(self) -> None:
        """Kill it (SIGKILL: nothing is saved, every key is gone)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self, down_s: float = 1.0) -> None:
        """Kill it, stay away ``down_s`` (a real restart takes a moment), start it empty."""
        self.stop()
        time.sleep(down_s)
        self.start()


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster (trust auth on loopback); data survives restarts, as it would."""

    bin: Path
    root: Path
    port: int
    as_pg: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"postgresql://handoff@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [
                *self.as_pg,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-l",
                str(self.root / "log"),
                "-w",
                "-o",
                f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off -c max_connections=200",
                *args,
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        """Stop at once (``-m immediate``: connections drop, as when the server crashes)."""
        self._ctl("-m", "immediate", "stop")


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[PrivateRedis]:
    """A private ``redis-server`` (data in ``directory``), stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    server = PrivateRedis(free_port(), directory)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()


@contextlib.contextmanager
def postgres_server(migrate: bool = True) -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster (migrated ``postgres`` database), stopped and removed on exit."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bins:
        raise RuntimeError("PostgreSQL server binaries are not installed")
    # pytest's tmp dirs are private to root; the postgres user needs a directory of its own.
    root = Path(tempfile.mkdtemp(prefix="handoff-pg-"))
    root.chmod(0o755)
    as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    if os.getuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    initdb = [str(bins[-1] / "initdb"), "-D", str(root / "data"), "-U", "handoff", "-A", "trust"]
    subprocess.run([*as_pg, *initdb, "-E", "UTF8", "--locale=C"], check=True, capture_output=True)
    server = PrivatePostgres(bins[-1], root, free_port(), as_pg)
    server.start()
    try:
        if migrate:
            from web.migrate import upgrade

            upgrade(server.url)
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of this test's own, which the test may stop and start."""
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A migrated PostgreSQL cluster of this test's own, which the test may stop and start."""
    if not sorted(Path("/usr/lib/postgresql").glob("*/bin")):
        pytest.skip("PostgreSQL server binaries are not installed")
    with postgres_server() as server:
        yield server
