"""Shared set-up of the agent end-to-end tests: settings pointing at the fake LLM, profiles on the
test images, a repository with a really failing test, and a helper that runs one task through the
REST API and a worker."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import httpx

from core.settings import Settings, load_settings
from jobs.image import build_offline, image_exists
from tests.fakes.llm import API_KEY, OPENAI_KEY
from tests.support.env import SANDBOX_IMAGE, LiveServer, git, running_worker, write_config
from tests.support.waiting import wait_for

DEBIAN = "handoff-sandbox:debian"
DEBIAN_ROOTFS = Path(os.environ.get("HANDOFF_DEBIAN_ROOTFS", "/var/cache/handoff/debian-rootfs"))
PRICES = {
    "claude-test": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
    "gpt-test": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
}
_LIMITS = {"memory": "256m", "pids": 128, "cpus": 1.0, "timeout_s": 60, "tmpfs_size": "64m"}


def ensure_debian_image() -> str:
    """The Debian sandbox image (python3, git, ripgrep), built offline from the cached rootfs."""
    client = docker.DockerClient(version="1.41")
    try:
        if not image_exists(client, DEBIAN):
            build_offline(client, "debian", rootfs=DEBIAN_ROOTFS if DEBIAN_ROOTFS.is_dir() else None)
    finally:
        client.close()
    return DEBIAN


def profiles(image: str, **overrides: Any) -> dict[str, Any]:
    """Built-in agent profiles on both providers, plus CLI profiles that replay recorded output."""
    agent = {
        "kind": "builtin",
        "image": image,
        "provider": "anthropic",
        "model": "claude-test",
        "max_steps": 12,
        "tool_timeout_s": 10,
        "limits": _LIMITS,
        **overrides,
    }
    replay = {"kind": "command", "image": SANDBOX_IMAGE, "limits": _LIMITS}
    return {
        "agent": agent,
        "agent-openai": {**agent, "provider": "openai", "model": "gpt-test"},
        "agent-json": {**agent, "stream": False},
        "claude-code": {**replay, "output": "claude-code", "command": ["cat", "/workspace/claude.jsonl"]},
        "codex": {
            **replay,
            "output": "codex",
            "command": ["cat", "/workspace/codex.jsonl"],
            "model": "gpt-test",
        },
        # What a CLI profile's container gets in its environment: a gateway token, never a key.
        "envdump": {**replay, "api_key_env": "ANTHROPIC_API_KEY", "model": "claude-test", "command": ["env"]},
    }


def agent_settings(
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    llm_url: str,
    *,
    image: str = SANDBOX_IMAGE,
    keys: bool = True,
    anthropic_key: str = API_KEY,
    profile: dict[str, Any] | None = None,
    extra_profiles: dict[str, Any] | None = None,
    **top: Any,
) -> Settings:
    """Settings whose model APIs are the fake LLM at ``llm_url`` (``extra_profiles`` added)."""
    config = write_config(
        tmp_path / "handoff.yml",
        # A loaded CI machine can delay a heartbeat past the suite's 5 s: a stale-run requeue
        # would replay the scripted model conversation from the start.
        limits={"stale_after_s": 30},
        default_profile="agent",
        profiles={**profiles(image, **(profile or {})), **(extra_profiles or {})},
        prices=PRICES,
        **top,
    )
    extra: dict[str, Any] = {}
    if keys:
        extra = {"anthropic_api_key": anthropic_key, "openai_api_key": OPENAI_KEY}
    return load_settings(
        database_url=database_url,
        redis_url=redis_url,
        handoff_config=config,
        handoff_workspace_dir=tmp_path / "workspaces",
        handoff_mirror_dir=tmp_path / "mirrors",
        handoff_queue_name=f"handoff:test:{uuid.uuid4().hex[:8]}",
        handoff_public_url="http://127.0.0.1:8000",
        anthropic_base_url=llm_url,
        openai_base_url=llm_url + "/v1",
        **extra,
    )


CALC = '"""Tiny calculator."""\n\n\ndef add(a, b):\n    return a - b\n'
TEST_CALC = (
    "import unittest\n\nfrom calc import add\n\n\nclass CalcTest(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
)


def python_repo(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    """A bare repository with a Python project whose one test really fails (``add`` subtracts)."""
    bare = tmp_path / "calc.git"
    git("init", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "calc-seed"
    git("clone", str(bare), str(seed))
    content = {
        "calc.py": CALC,
        "tests/__init__.py": "",
        "tests/test_calc.py": TEST_CALC,
        "AGENTS.md": "Keep functions tiny. Never add dependencies.\n",
        ".handoff.yml": "setup: python3 --version\ntest: python3 -m unittest -q\nnotes: [The calculator is integer-only.]\n",
        **(files or {}),
    }
    for name, text in content.items():
        (seed / name).parent.mkdir(parents=True, exist_ok=True)
        (seed / name).write_text(text)
    git("add", "-A", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-m", "initial", cwd=seed)
    git("push", "origin", "main", cwd=seed)
    return bare


@contextlib.asynccontextmanager
async def handoff(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API over loopback and a worker, with a client for the API."""
    from web.app import create_app

    async with (
        LiveServer(create_app(settings)) as api,
        httpx.AsyncClient(base_url=api.url, timeout=30) as client,
        running_worker(settings),
    ):
        yield client


async def run_task(
    client: httpx.AsyncClient, body: dict[str, Any], *, states: set[str] | None = None, timeout: float = 120
) -> dict[str, Any]:
    """Create a task and wait until it reaches ``states`` (default: any terminal state)."""
    created = await client.post("/api/tasks", json=body)
    assert created.status_code == 201, created.text
    return await wait_for(client, created.json()["id"], states, timeout=timeout)


async def events(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    """Every stored event of a run."""
    response = await client.get(f"/api/runs/{run_id}/events")
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items
