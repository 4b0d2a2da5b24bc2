"""A hostile CLI-profile container: it holds no host secret, reaches nothing, and still finishes.

The repository's own script (``tests/data/sandbox_probe.py``, run before Claude Code in the
container) searches its environment, every process's environ and command line, and every
readable file for the host's secrets — model keys, Slack and GitHub secrets, the API token —
then tries the host's port, the cloud metadata service, a private address and this host's own
address directly, and through the egress proxy adds a name off the allow-list and a forbidden
port. Afterwards Claude Code does the task through the model gateway.

Each attack is first shown to work on an unguarded path: the same scan finds the key when it is
passed the old way (in the environment), and the same connection reaches the host's port from a
container on the host's network. The built-in agent's tools, run in its long-lived container,
get the same proxy and the same refusals.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import SecretStr

from core.config import Limits
from core.ports import SandboxSpec
from jobs.gateway.policy import host_addresses
from jobs.sandbox import DockerSandbox
from tests.fakes.llm import Call, FakeLLM, Reply
from tests.support.agents import agent_settings, ensure_debian_image, events, handoff, python_repo, run_task
from tests.support.cli import cli_profile
from tests.support.env import LiveServer

PROBE = Path(__file__).parent / "data" / "sandbox_probe.py"
MARKER = "host-service-marker-" + "7f3a"


def _host_secrets() -> dict[str, str]:
    """Fresh values of every secret the worker may hold, in their real shapes."""
    token = secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
    return {
        "anthropic": f"sk-ant-api03-{token}A",
        "openai": f"sk-proj-{token}B",
        "slack-bot": f"xoxb-1234-5678-{token}C",
        "slack-signing": f"signing{token}D",
        "slack-app": f"xapp-1-A01-{token}E",
        "github-webhook": f"whsec{token}F",
        "github-client": f"ghclient{token}G",
        "api-token": f"hapi{token}H",
    }


def _needles(values: dict[str, str]) -> dict[str, str]:
    # Reversed and base64'd: the decoded values exist only in the probe's memory.
    return {name: base64.b64encode(value.encode()[::-1]).decode() for name, value in values.items()}


def _own_ipv4() -> list[str]:
    return sorted(str(a) for a in host_addresses() if a.version == 4 and not a.is_loopback)


@pytest.fixture
async def host_service() -> AsyncIterator[int]:
    """A service on the host's loopback, like the API, Redis or PostgreSQL: the attacks' target."""
    app = FastAPI()
    app.get("/")(lambda: PlainTextResponse(MARKER))
    async with LiveServer(app) as server:
        yield server.port


def _workspace(tmp_path: Path, spec: dict[str, Any]) -> Path:
    ws = tmp_path / "probe-ws"
    ws.mkdir(parents=True)
    shutil.copy(PROBE, ws / "sandbox_probe.py")
    (ws / "probe.json").write_text(json.dumps(spec))
    shutil.chown(ws, 1000, 1000)
    (tmp_path / "task.json").write_text("{}")
    return ws


async def _probe_unguarded(
    tmp_path: Path, image: str, env: dict[str, str], spec: dict[str, Any]
) -> list[str]:
    """The probe in a plain sandbox container, with the key passed the old way."""
    ws = _workspace(tmp_path, spec)
    sandbox = DockerSandbox(instance="test-secrets")
    lines: list[str] = []
    try:
        result = await sandbox.run(
            SandboxSpec(
                task_id="t_unguarded",
                run_id=f"r_unguarded_{secrets.token_hex(3)}",
                image=image,
                command=["python3", "/workspace/sandbox_probe.py"],
                workspace=ws,
                spec_file=tmp_path / "task.json",
                env=env,
                limits=Limits(memory="512m", pids=128, timeout_s=120, tmpfs_size="64m"),
            ),
            lines.append,
            asyncio.Event(),
        )
    finally:
        sandbox.close()
    assert result.exit_code == 0, lines
    return lines


def _probe_on_host_network(image: str, ws: Path) -> str:
    """The probe's direct connection to the host's port from a container on the host's network."""
    client = docker.DockerClient(version="1.41")
    try:
        out = client.containers.run(
            image,
            ["python3", "/workspace/sandbox_probe.py"],
            network_mode="host",
            user="1000:1000",
            volumes={str(ws): {"bind": "/workspace", "mode": "ro"}},
            remove=True,
        )
    finally:
        client.close()
    return bytes(out).decode()


async def test_a_hostile_cli_container_finds_no_secret_reaches_nothing_and_still_finishes(
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
    agent_images: dict[str, str],
    host_service: int,
) -> None:
    image = agent_images["claude-code"]
    values = _host_secrets()
    own = _own_ipv4()
    # -- the unguarded controls: each attack works when nothing stops it
    leaked = await _probe_unguarded(
        tmp_path / "control", image, {"ANTHROPIC_API_KEY": values["anthropic"]}, {"needles": _needles(values)}
    )
    assert (
        "PROBE found anthropic in environment" in leaked
        and "PROBE found anthropic in /proc/1/environ" in leaked
    )
    control = tmp_path / "control-net"
    ws = _workspace(control, {"connect": [["127.0.0.1", host_service]]})
    reached = await asyncio.to_thread(_probe_on_host_network, image, ws)
    assert f"PROBE connect 127.0.0.1:{host_service} -> connected: HTTP/1.1 200 OK" in reached
    # -- the real thing: a CLI profile run through the pipeline
    attempts = [
        f"CONNECT 127.0.0.1:{host_service} HTTP/1.1",
        "CONNECT 127.0.0.1:443 HTTP/1.1",
        "CONNECT 169.254.169.254:80 HTTP/1.1",
        "GET http://169.254.169.254/latest/meta-data/iam/ HTTP/1.1\r\nHost: 169.254.169.254",
        "CONNECT 10.0.0.1:443 HTTP/1.1",
        *[f"CONNECT {address}:443 HTTP/1.1" for address in own],
        "CONNECT example.com:443 HTTP/1.1",
        "CONNECT pypi.org:22 HTTP/1.1",
    ]
    spec = {
        "needles": _needles(values),
        "connect": [["127.0.0.1", host_service], ["169.254.169.254", 80], ["10.0.0.1", 443]]
        + [[a, host_service] for a in own],
        "proxied": attempts,
    }
    fake = FakeLLM(anthropic_key=values["anthropic"], openai_key=values["openai"])
    fake.add(
        Reply("Reading.", (Call("Read", {"file_path": "/workspace/calc.py"}),)),
        Reply(
            "Fixing.",
            (
                Call(
                    "Edit", {"file_path": "/workspace/calc.py", "old_string": "a - b", "new_string": "a + b"}
                ),
            ),
        ),
        Reply("Fixed add()."),
    )
    command = (
        'python3 /workspace/sandbox_probe.py; exec claude -p "$HANDOFF_INSTRUCTIONS" --output-format stream-json '
        '--verbose --permission-mode bypassPermissions --max-turns 10 --model "$HANDOFF_MODEL"'
    )
    profile = cli_profile("claude-code", command=["sh", "-c", command], egress={"allow": ["pypi.org"]})
    async with LiveServer(fake.app) as llm:
        settings = agent_settings(
            sqlite_url,
            redis_url,
            tmp_path,
            llm.url,
            anthropic_key=values["anthropic"],
            extra_profiles={"attack": profile},
        )
        settings = settings.model_copy(
            update={
                "openai_api_key": SecretStr(values["openai"]),
                "slack_bot_token": SecretStr(values["slack-bot"]),
                "slack_signing_secret": SecretStr(values["slack-signing"]),
                "slack_app_token": SecretStr(values["slack-app"]),
                "github_webhook_secret": SecretStr(values["github-webhook"]),
                "github_client_secret": SecretStr(values["github-client"]),
                "handoff_api_token": SecretStr(values["api-token"]),
            }
        )
        repo = python_repo(tmp_path, {"sandbox_probe.py": PROBE.read_text(), "probe.json": json.dumps(spec)})
        async with handoff(settings) as client:
            client.headers["authorization"] = f"Bearer {values['api-token']}"
            done = await run_task(
                client, {"repo": str(repo), "instructions": "Fix add().", "agent": "attack"}, timeout=300
            )
            stored = await events(client, done["runs"][-1]["id"])
    lines = [e["data"]["text"] for e in stored if e["type"] == "log"]
    probe = [line for line in lines if line.startswith("PROBE ")]
    # No secret anywhere it could read (and it really read: the whole image, its mounts, /proc).
    assert not [line for line in probe if line.startswith("PROBE found")], probe
    (scanned,) = [line for line in probe if line.startswith("PROBE scanned")]
    files = int(scanned.split("files=")[1].split()[0])
    assert files > 5000, scanned
    # Every direct connection fails at once: there is no network.
    direct = [line for line in probe if line.startswith("PROBE connect")]
    assert len(direct) == len(spec["connect"])
    assert all("refused: [Errno" in line for line in direct), direct
    # Every proxied attempt is refused by the proxy, and recorded as a run event.
    proxied = [line for line in probe if line.startswith("PROBE proxy")]
    assert len(proxied) == len(attempts) and all(
        line.endswith("-> HTTP/1.1 403 Forbidden") for line in proxied
    ), proxied
    refused = [e["data"]["egress"] for e in stored if e["type"] == "log" and "egress" in e["data"]]
    assert not [r for r in refused if r["allowed"]]
    recorded = {(r["host"], r["port"]) for r in refused}
    for attempt in attempts:
        target = attempt.split()[1]
        host_port = (
            ("169.254.169.254", 80)
            if target.startswith("http://")
            else (target.rsplit(":", 1)[0], int(target.rsplit(":", 1)[1]))
        )
        assert host_port in recorded, (attempt, recorded)
    reasons = {f"{r['host']}:{r['port']}": r["reason"] for r in refused}
    assert reasons["169.254.169.254:80"] == "link-local address (cloud metadata)"
    assert reasons["10.0.0.1:443"] == "private or reserved address"
    assert reasons["example.com:443"] == "not on the allow-list"
    assert reasons["pypi.org:22"].startswith("port 22 is not allowed")
    assert all(ipaddress.ip_address(a) for a in own)
    # And the task still completed, through the gateway, with the real key added on the host.
    assert done["state"] == "succeeded", done
    assert {r.headers["x-api-key"] for r in fake.requests} == {values["anthropic"]}
    assert done["runs"][-1]["tokens_in"] == 3000


async def test_the_built_in_agents_tools_reach_the_network_only_through_the_allow_list(
    sqlite_url: str, redis_url: str, tmp_path: Path, host_service: int
) -> None:
    image = ensure_debian_image()
    spec = {
        "connect": [["169.254.169.254", 80], ["127.0.0.1", host_service]],
        "proxied": ["CONNECT 169.254.169.254:80 HTTP/1.1", "CONNECT example.com:443 HTTP/1.1"],
    }
    fake = FakeLLM()
    fake.add(
        Reply("", (Call("bash", {"command": "python3 sandbox_probe.py"}),)),
        Reply("", (Call("finish", {"summary": "probed"}),)),
    )
    async with LiveServer(fake.app) as llm:
        settings = agent_settings(
            sqlite_url, redis_url, tmp_path, llm.url, image=image, profile={"egress": {"allow": ["pypi.org"]}}
        )
        repo = python_repo(tmp_path, {"sandbox_probe.py": PROBE.read_text(), "probe.json": json.dumps(spec)})
        async with handoff(settings) as client:
            done = await run_task(client, {"repo": str(repo), "instructions": "Probe."})
            stored = await events(client, done["runs"][-1]["id"])
    assert done["state"] == "succeeded", done
    (result,) = [e["data"] for e in stored if e["type"] == "tool" and e["data"]["phase"] == "result"]
    output = result["output"]
    assert "PROBE connect 169.254.169.254:80 -> refused: [Errno 101] Network is unreachable" in output
    assert f"PROBE connect 127.0.0.1:{host_service} -> refused: [Errno 111]" in output
    assert output.count("-> HTTP/1.1 403 Forbidden") == 2, output
    refused = {
        (d["egress"]["host"], d["egress"]["reason"]) for d in (e["data"] for e in stored) if "egress" in d
    }
    assert refused == {
        ("169.254.169.254", "link-local address (cloud metadata)"),
        ("example.com", "not on the allow-list"),
    }
