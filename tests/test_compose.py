"""The team deployment, for real: ``docker-compose.yml`` brought up with the Compose Debian ships.

The app image is built from the ``Dockerfile`` on an offline Debian base, PostgreSQL and Redis run
from images built from Debian's packages (no registry is reachable: ``tests/support/compose.py``),
the ``migrate`` and ``sandbox-build`` one-shots run first, and then a task created through the API
runs in a sandbox started by the ``worker`` container, on a repository mounted for the test, and
pushes its branch. The worker is restarted in the middle of a run; the task still finishes, and a
task queued while it was down runs after. ``down -v`` removes everything at the end.

Marked ``compose``: it runs in ``make test`` (a skip, for want of an engine or of
``docker-compose``, fails the run under CI=true); ``-m "not compose"`` leaves it out locally.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core.settings import Settings
from tests.support.env import free_port, git

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "budget_exceeded"}
pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]


# ---------------------------------------------------------------- the shipped files agree


def test_shipped_files_agree_with_each_other() -> None:
    """deploy/handoff.yml, examples/.handoff.yml, docker-compose.yml and the Settings model."""
    from bot.config import load_slack_config
    from core.config import load_config
    from github_app.repo_config import GitHubServerConfig, resolve
    from jobs.image import DEFAULT_TAGS

    deploy = ROOT / "deploy" / "handoff.yml"
    config = load_config(deploy)
    load_slack_config(deploy)
    server = GitHubServerConfig.model_validate(config.github)
    # Every profile's image is one the sandbox-build service makes.
    assert {p.image for p in config.profiles.values()} <= set(DEFAULT_TAGS.values())
    # The sample repository file is accepted in full by the shipped server file.
    sample = resolve(server, config.profiles, (ROOT / "examples" / ".handoff.yml").read_text())
    assert sample.notes == [] and sample.agent in config.profiles and sample.setup and sample.test

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    passed = set(compose["x-handoff-env"])
    # Every setting reaches the containers, but DOCKER_HOST: the worker gets the socket mounted.
    wanted = {name.upper() for name in Settings.model_fields} - {"DOCKER_HOST"}
    assert wanted <= passed, f"not passed through docker-compose.yml: {sorted(wanted - passed)}"
    # The README shows both files in full: they must be the files themselves.
    readme = (ROOT / "README.md").read_text()
    assert (ROOT / "deploy" / "handoff.yml").read_text() in readme
    assert (ROOT / "examples" / ".handoff.yml").read_text() in readme
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".env", ".venv", "deploy/secrets", ".handoff"} <= set(ignored)


# ---------------------------------------------------------------- the stack


@dataclass
class Stack:
    """One compose project: how to run docker-compose on it and reach its API."""

    compose: list[str]
    env: dict[str, str]
    url: str
    token: str
    instance: str

    def run(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker-compose ARGS`` for this project."""
        proc = subprocess.run(
            [*self.compose, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def container(self, service: str) -> dict[str, Any]:
        """``docker inspect`` of the service's (first) container."""
        import docker

        client = docker.DockerClient(version="1.41")
        try:
            project = self.env["COMPOSE_PROJECT_NAME"]
            found = client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"com.docker.compose.project={project}",
                        f"com.docker.compose.service={service}",
                    ]
                },
            )
            assert found, f"no container for {service}"
            attrs: dict[str, Any] = found[0].attrs
            return attrs
        finally:
            client.close()

    def api(self) -> httpx.Client:
        """A client for the stack's API with its token."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)


def wait(what: str, predicate: Any, timeout: float, interval: float = 0.5) -> Any:
    """Poll ``predicate()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, AssertionError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def stack(tmp_path: Path, bare_repo: Path) -> Iterator[Stack]:
    """Base images (cached by tag), an override that builds on the host network and mounts the
    test repository, and the compose project; torn down with ``down -v`` whatever happens."""
    import docker

    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (make test installs it: apt-get install docker-compose)")
    try:
        client = docker.DockerClient(version="1.41")
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine: {exc}")
    from tests.support.compose import debian_base, service_image

    started = time.monotonic()
    base = debian_base(client)
    postgres = service_image(client, "postgres", "15", base)
    redis = service_image(client, "redis", "7", base)
    print(f"base images ready in {time.monotonic() - started:.0f} s: {base} {postgres} {redis}")

    project = f"handoffct{os.getpid()}"
    workspace = tmp_path / "workspaces"
    workspace.mkdir()
    # The build runs on the host's network (this engine has no bridge to give it one), and the
    # worker sees the test's repository at the same path as the host.
    override = tmp_path / "compose.test.yml"
    override.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "migrate": {"build": {"network": "host"}},
                    "api": {"build": {"network": "host"}},
                    "worker": {"build": {"network": "host"}, "volumes": [f"{bare_repo}:{bare_repo}"]},
                    # debootstrap of the Debian sandbox image (when missing) needs the mirror.
                    "sandbox-build": {"build": {"network": "host"}, "network_mode": "host"},
                }
            }
        )
    )
    empty_env = tmp_path / "empty.env"  # a developer's .env must not leak into the test
    empty_env.write_text("")
    port = free_port()
    token = secrets.token_hex(16)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "COMPOSE_PROJECT_NAME": project,
        "HANDOFF_IMAGE": f"handoff-test/app:{hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]}",
        "HANDOFF_BASE_IMAGE": base,
        "HANDOFF_POSTGRES_IMAGE": postgres,
        "HANDOFF_REDIS_IMAGE": redis,
        "HANDOFF_API_TOKEN": token,
        "HANDOFF_PORT": str(port),
        "HANDOFF_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HANDOFF_WORKSPACE_DIR": str(workspace),
        "HANDOFF_INSTANCE": project,
        "POSTGRES_PASSWORD": secrets.token_hex(8),
    }
    files = ["-f", "docker-compose.yml", "-f", str(override), "--env-file", str(empty_env)]
    stack = Stack([compose, *files], env, f"http://127.0.0.1:{port}", token, project)
    try:
        yield stack
    except BaseException:
        print(stack.run("logs", "--no-color", "--tail", "80", check=False).stdout)
        raise
    finally:
        down = stack.run("down", "-v", "--remove-orphans", "-t", "30", check=False)
        # Agent containers are the worker's, not compose's: remove any this instance left.
        for leftover in client.containers.list(all=True, filters={"label": f"handoff.instance={project}"}):
            leftover.remove(force=True)
        client.close()
        assert down.returncode == 0, down.stderr


def _task(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/api/tasks/{task_id}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_compose_stack_runs_tasks_through_a_worker_restart(stack: Stack, bare_repo: Path) -> None:
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    # `docker compose config`: the shipped file alone, and as the test runs it.
    alone = subprocess.run(
        [stack.compose[0], "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HANDOFF_API_TOKEN": "x"},
        capture_output=True,
        text=True,
    )
    assert alone.returncode == 0 and "secret" not in alone.stderr, alone.stderr
    no_token = subprocess.run(
        [stack.compose[0], "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
    )
    assert no_token.returncode != 0 and "set HANDOFF_API_TOKEN" in no_token.stderr
    config = yaml.safe_load(stack.run("config").stdout)
    services = config["services"]
    assert set(services) == {"migrate", "sandbox-build", "api", "worker", "postgres", "redis"}
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert "--no-migrate" in services[name]["command"]
    assert services["worker"]["depends_on"]["sandbox-build"] == {
        "condition": "service_completed_successfully"
    }
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    workspace = stack.env["HANDOFF_WORKSPACE_DIR"]
    assert f"{workspace}:{workspace}:rw" in services["worker"]["volumes"]
    assert services["api"]["environment"]["GITHUB_PRIVATE_KEY_PATH"] == "/run/secrets/github_private_key"

    stack.run("build")
    timings["build"] = time.monotonic() - t0
    up = stack.run("up", "-d")
    assert "undefined secret" not in up.stderr, up.stderr
    with stack.api() as client:
        wait("/readyz", lambda: client.get("/readyz").status_code == 200, 300)
        timings["ready"] = time.monotonic() - t0
        assert client.get("/livez").json() == {"ok": True}
        assert client.get("/api/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
        for one_shot in ("migrate", "sandbox-build"):
            state = stack.container(one_shot)["State"]
            assert state["Status"] == "exited" and state["ExitCode"] == 0, (one_shot, state)
        built = stack.run("logs", "--no-color", "sandbox-build").stdout
        assert "handoff-sandbox:minimal" in built and "handoff-sandbox:debian" in built
        wait("api healthy", lambda: stack.container("api")["State"]["Health"]["Status"] == "healthy", 120)
        # The worker can build the sandbox's network forwarder (runs behind the model gateway or
        # the egress proxy need it), and the doctor finds the engine and both sandbox images.
        forwarder = stack.run(
            "exec",
            "-T",
            "worker",
            "python",
            "-c",
            "from pathlib import Path; from jobs.gateway.forwarder import forwarder_binary; "
            "print(forwarder_binary(Path('/tmp/forwarder')))",
        ).stdout
        assert "handoff-forward-" in forwarder
        doctor = stack.run("exec", "-T", "worker", "handoff", "doctor", check=False).stdout
        for line in ("ok   docker", "ok   image handoff-sandbox:minimal", "ok   database", "ok   redis"):
            assert line in doctor, doctor

        # A task that is still running when the worker is restarted.
        first = client.post(
            "/api/tasks",
            json={"repo": str(bare_repo), "instructions": "echo started; sleep 8; echo one > ONE.md"},
        )
        assert first.status_code == 201, first.text
        first_id = first.json()["id"]
        wait("the first task to run", lambda: _task(client, first_id)["state"] == "running", 180)
        before = stack.container("worker")["State"]["StartedAt"]
        stack.run("restart", "-t", "60", "worker")
        assert stack.container("worker")["State"]["StartedAt"] != before, "the worker was not restarted"
        # Queued right after the restart: the new worker takes it.
        second = client.post(
            "/api/tasks", json={"repo": str(bare_repo), "instructions": "echo two > TWO.md"}
        ).json()["id"]
        done = {
            tid: wait(
                f"task {tid} to end",
                lambda tid=tid: (t := _task(client, tid))["state"] in TERMINAL and t,
                300,
            )
            for tid in (first_id, second)
        }
        timings["tasks"] = time.monotonic() - t0
    for tid, task in done.items():
        assert task["state"] == "succeeded", task
        assert task["branch"] == f"handoff/{tid}"
    assert git("--git-dir", str(bare_repo), "show", f"handoff/{first_id}:ONE.md") == "one"
    assert git("--git-dir", str(bare_repo), "show", f"handoff/{second}:TWO.md") == "two"

    t1 = time.monotonic()
    stack.run("down", "-v", "-t", "30")
    timings["down"] = time.monotonic() - t1
    left = stack.run("ps", "-q").stdout.split()
    assert left == []
    print("compose test timings (s from start):", {k: round(v, 1) for k, v in timings.items()})
