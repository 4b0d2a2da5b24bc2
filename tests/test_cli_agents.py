"""The real Claude Code and Codex CLIs, run end to end: REST API → worker → their images (network
``none``) → the run's model gateway → the fake provider on loopback.

The profiles are the ones ``examples/handoff.yml`` documents (only the image's model names and the
limits differ). Each run reads ``calc.py``, edits it and finishes; the change is pushed, the run's
tokens are the provider's own counts as the gateway metered them, and while the agent works its
container shows network ``none``, a gateway token and no key. A run whose answer outgrows its cost
budget is cut mid-stream and ends ``budget_exceeded``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest

from jobs.agent_image import DEFAULT_ROOTFS
from tests.fakes.llm import API_KEY, OPENAI_KEY, Call, FakeLLM, Reply
from tests.support.agents import agent_settings, events, handoff, python_repo
from tests.support.cli import MODEL, cli_profile
from tests.support.env import LiveServer, git
from tests.support.waiting import wait_for

USAGE = [(1234, 56), (2345, 67), (3456, 78)]
SCRIPTS = {
    "claude-code": [
        Reply(
            "Reading calc.py.",
            (Call("Read", {"file_path": "/workspace/calc.py"}),),
            usage=USAGE[0],
            delay_s=1.0,
        ),
        Reply(
            "`add` subtracts; fixing it.",
            (
                Call(
                    "Edit", {"file_path": "/workspace/calc.py", "old_string": "a - b", "new_string": "a + b"}
                ),
            ),
            usage=USAGE[1],
        ),
        Reply("Fixed add() in calc.py.", usage=USAGE[2]),
    ],
    "codex": [
        Reply(
            "Reading calc.py.", (Call("exec_command", {"cmd": "cat calc.py"}),), usage=USAGE[0], delay_s=1.0
        ),
        Reply(
            "`add` subtracts; fixing it.",
            (Call("exec_command", {"cmd": "sed -i 's/a - b/a + b/' calc.py"}),),
            usage=USAGE[1],
        ),
        Reply("Fixed add() in calc.py.", usage=USAGE[2]),
    ],
}
PRICES = {"claude-code": (3.0, 15.0), "codex": (2.0, 8.0)}  # tests/support/agents.py PRICES


@pytest.fixture
async def provider() -> AsyncIterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()
    async with LiveServer(fake.app) as server:
        yield fake, server.url


async def _inspect_while_running(task_id: str) -> dict[str, Any]:
    """``docker inspect`` of the task's container, taken while the agent is at work."""
    client = docker.DockerClient(version="1.41")
    try:
        for _ in range(600):
            found = await asyncio.to_thread(
                client.containers.list, filters={"label": f"handoff.task={task_id}", "status": "running"}
            )
            if found:
                return dict(found[0].attrs)
            await asyncio.sleep(0.05)
    finally:
        client.close()
    raise AssertionError("the task's container was never seen running")


@pytest.mark.parametrize("cli", ["claude-code", "codex"])
async def test_the_real_cli_edits_a_file_through_the_gateway_with_no_key_and_no_network(
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
    agent_images: dict[str, str],
    provider: tuple[FakeLLM, str],
    cli: str,
) -> None:
    fake, url = provider
    fake.add(*SCRIPTS[cli])
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url, extra_profiles={cli: cli_profile(cli)})
    repo = python_repo(tmp_path)
    async with handoff(settings) as client:
        created = await client.post(
            "/api/tasks", json={"repo": str(repo), "instructions": "Fix add().", "agent": cli}
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        inspected = await _inspect_while_running(task_id)
        done = await wait_for(client, task_id, timeout=240)
        run = done["runs"][-1]
        stored = await events(client, run["id"])
    assert done["state"] == "succeeded", (done, [e for e in stored if e["type"] in ("error", "log")][-20:])
    assert "return a + b" in git("--git-dir", str(repo), "show", f"handoff/{task_id}:calc.py")
    # The container: no network, the gateway's token where the key would be, no key anywhere.
    assert inspected["HostConfig"]["NetworkMode"] == "none"
    env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    key_var = "ANTHROPIC_API_KEY" if cli == "claude-code" else "OPENAI_API_KEY"
    assert env[key_var].startswith("hgw_") and env["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert not [v for v in env.values() if API_KEY in v or OPENAI_KEY in v]
    mounts = {m["Destination"]: m for m in inspected["Mounts"]}
    assert not mounts["/handoff/gw"]["RW"] and not mounts["/handoff/bin/handoff-forward"]["RW"]
    assert inspected["Config"]["Cmd"][0] == "/handoff/bin/handoff-forward"
    # The provider saw the real key (added by the gateway) and nothing else.
    header = "x-api-key" if cli == "claude-code" else "authorization"
    assert {r.headers[header].removeprefix("Bearer ") for r in fake.requests} == {
        API_KEY if cli == "claude-code" else OPENAI_KEY
    }
    assert not fake.problems and len(fake.requests) == 3
    # Metered by the gateway from the provider's counts; what the CLI says about itself is not counted.
    price = PRICES[cli]
    assert (run["tokens_in"], run["tokens_out"]) == (sum(u[0] for u in USAGE), sum(u[1] for u in USAGE))
    assert run["cost_usd"] == pytest.approx(sum(u[0] * price[0] + u[1] * price[1] for u in USAGE) / 1e6)
    assert run["steps"] == 3 and run["model"] == MODEL[cli]
    metered = [e["data"] for e in stored if e["type"] == "progress" and "usage" in e["data"]]
    assert [(m["metered"], m["usage"]["input_tokens"]) for m in metered] == [("gateway", u[0]) for u in USAGE]
    # Its stream, translated into run events.
    results = [e["data"] for e in stored if e["type"] == "tool" and e["data"]["phase"] == "result"]
    assert len(results) == 2 and all(r["ok"] for r in results)
    assert "return a - b" in results[0]["output"]
    assert done["summary"] == "Fixed add() in calc.py."
    # The run's sockets and token are gone with it.
    assert not list((settings.handoff_workspace_dir / ".gateway" / "runs").iterdir())


async def test_a_cli_run_stops_at_its_cost_budget_mid_stream(
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
    agent_images: dict[str, str],
    provider: tuple[FakeLLM, str],
) -> None:
    fake, url = provider
    # 1,000 input tokens ($0.003), then an answer of ~10,000 tokens ($0.15) streaming slowly.
    fake.add(
        Reply("word " * 8000, usage=(1000, 10_000), pieces=400, piece_delay_s=0.01),
        Reply("never", sticky=True),
    )
    settings = agent_settings(
        sqlite_url, redis_url, tmp_path, url, extra_profiles={"claude-code": cli_profile("claude-code")}
    )
    repo = python_repo(tmp_path)
    async with handoff(settings) as client:
        created = await client.post(
            "/api/tasks",
            json={
                "repo": str(repo),
                "instructions": "Explain.",
                "agent": "claude-code",
                "budget": {"max_cost_usd": 0.02},
            },
        )
        assert created.status_code == 201, created.text
        done = await wait_for(client, created.json()["id"], timeout=240)
        stored = await events(client, done["runs"][-1]["id"])
    assert done["state"] == "budget_exceeded", done
    assert fake.streams[0] == "cut"  # stopped while streaming
    run = done["runs"][-1]
    assert 0.02 < run["cost_usd"] < 0.15 and run["tokens_in"] == 1000
    (usage,) = [e["data"] for e in stored if e["type"] == "progress" and "usage" in e["data"]]
    assert usage["estimated"] is True
    assert done["state_reason"].startswith("budget exceeded: $0.02")


def test_the_images_run_as_the_sandbox_user_with_the_cli_installed(agent_images: dict[str, str]) -> None:
    client = docker.DockerClient(version="1.41")
    try:
        for name, tag in agent_images.items():
            image = client.images.get(tag)
            assert image.attrs["Config"]["User"] == "1000:1000"
            command = (
                "claude --version" if name == "claude-code" else "codex --version && command -v handoff-codex"
            )
            out = client.containers.run(tag, ["sh", "-c", command], network_mode="none", remove=True)
            assert (b"2.1.332" if name == "claude-code" else b"0.171.0") in out
    finally:
        client.close()
    assert os.path.isdir(DEFAULT_ROOTFS)
