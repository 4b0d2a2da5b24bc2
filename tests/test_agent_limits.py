"""The built-in agent under limits and faults, end to end: budgets (steps, tokens, cost, time) end
the run ``budget_exceeded`` with the partial work pushed; 429/529 are retried honouring
``retry-after``; a bad key, a missing key or an unknown model fail at once with a clear message; a
malformed tool call and a hanging command come back to the model as error results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.fakes.llm import Call, FakeLLM, Fault, Reply
from tests.support.agents import agent_settings, events, handoff, python_repo, run_task
from tests.support.env import LiveServer, git
from tests.support.waiting import wait_for, wait_until

REPO_FILES = {".handoff.yml": "notes: none\n"}  # no setup: the busybox image has no python


@pytest.fixture
async def llm() -> AsyncIterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()
    async with LiveServer(fake.app) as server:
        yield fake, server.url


SPEND = [
    Reply("Starting.", (Call("write_file", {"path": "PARTIAL.md", "content": "partial\n"}),)),
    Reply("", (Call("bash", {"command": "sleep 0.5; echo step"}),), delay_s=0.3, sticky=True),
]


@pytest.mark.parametrize(
    ("budget", "reason", "steps"),
    [
        ({"max_steps": 2}, "2 steps used (limit 2)", 2),
        ({"max_tokens": 2500}, "3300 tokens used (limit 2500)", 3),
        ({"max_cost_usd": 0.01}, "$0.0135 spent (limit $0.01)", 3),
        ({"max_input_tokens": 1500}, "2000 input tokens used (limit 1500)", 2),
        ({"wall_clock_s": 4}, "wall-clock budget of 4 s used", None),
    ],
    ids=["steps", "tokens", "cost", "input-tokens", "time"],
)
async def test_budgets_end_the_run_and_keep_the_partial_change(
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
    sandbox_image: str,
    llm: tuple[FakeLLM, str],
    budget: dict[str, Any],
    reason: str,
    steps: int | None,
) -> None:
    fake, url = llm
    fake.add(*SPEND)
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url)
    repo = python_repo(tmp_path, REPO_FILES)
    started = time.monotonic()
    async with handoff(settings) as client:
        done = await run_task(client, {"repo": str(repo), "instructions": "Spend.", "budget": budget})
    assert done["state"] == "budget_exceeded", done
    assert done["state_reason"] == f"budget exceeded: {reason}"
    run = done["runs"][0]
    if steps is not None:
        assert run["steps"] == steps and len(fake.requests) == steps
    else:
        assert 2 <= run["steps"] <= 8 and time.monotonic() - started < 20
    assert run["tokens_in"] == 1000 * run["steps"] and run["cost_usd"] == pytest.approx(0.0045 * run["steps"])
    # The partial change is pushed, and the summary says the run stopped early and what it did.
    assert git("--git-dir", str(repo), "show", f"handoff/{done['id']}:PARTIAL.md") == "partial"
    assert done["summary"].startswith("Stopped before finishing: budget exceeded")
    assert "Files edited: `PARTIAL.md`." in done["summary"]


@pytest.mark.parametrize("api", ["agent", "agent-openai"])
async def test_rate_limit_and_overload_are_retried_then_succeed(
    sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str, llm: tuple[FakeLLM, str], api: str
) -> None:
    fake, url = llm
    fake.add(
        Fault(429, headers={"retry-after": "0.3"}),
        Fault(529 if api == "agent" else 503, message="Overloaded"),
        Reply("", (Call("finish", {"summary": "done after retries"}),)),
    )
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url)
    repo = python_repo(tmp_path, REPO_FILES)
    async with handoff(settings) as client:
        done = await run_task(client, {"repo": str(repo), "instructions": "Retry.", "agent": api})
        stored = await events(client, done["runs"][0]["id"])
    assert done["state"] == "succeeded" and done["summary"] == "done after retries"
    retries = [e["data"] for e in stored if e["data"].get("step") == "model retry"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert retries[0]["delay_s"] == 0.3 and "HTTP 429" in retries[0]["reason"]
    assert "Overloaded" in retries[1]["reason"]
    assert len(fake.requests) == 3 and fake.requests[1].at - fake.requests[0].at >= 0.3
    assert done["runs"][0]["steps"] == 1


@pytest.mark.parametrize(
    ("settings_kw", "reason", "requests"),
    [
        ({"keys": False}, "ANTHROPIC_API_KEY is not set: the built-in Anthropic agent cannot run", 0),
        ({"anthropic_key": "sk-ant-not-the-right-key-000000"}, "the model API refused the key (HTTP 401)", 1),
        (
            {"profile": {"model": "claude-nope"}},
            "unknown model or endpoint (HTTP 404): model: claude-nope",
            1,
        ),
    ],
    ids=["missing-key", "invalid-key", "unknown-model"],
)
async def test_key_and_model_errors_fail_at_once_with_a_clear_message(
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
    sandbox_image: str,
    llm: tuple[FakeLLM, str],
    settings_kw: dict[str, Any],
    reason: str,
    requests: int,
) -> None:
    fake, url = llm
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url, **settings_kw)
    repo = python_repo(tmp_path, REPO_FILES)
    started = time.monotonic()
    async with handoff(settings) as client:
        done = await run_task(client, {"repo": str(repo), "instructions": "Go."})
        stored = await events(client, done["runs"][0]["id"])
    assert done["state"] == "failed" and done["state_reason"].startswith(reason), done
    assert len(done["runs"]) == 1 and len(fake.requests) == requests  # not retried
    assert reason in next(e["data"].get("message", "") for e in stored if e["type"] == "error")
    assert time.monotonic() - started < 15
    if requests == 0:
        assert done["runs"][0]["container_id"] is None  # failed before any container started


async def test_malformed_tool_call_gets_an_error_result_not_a_crash(
    sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str, llm: tuple[FakeLLM, str]
) -> None:
    fake, url = llm
    fake.add(
        Reply("", (Call("read_file", raw='{"path": "calc.py"'), Call("frobnicate", {"x": 1}))),
        Reply("", (Call("read_file", {"path": "calc.py", "start_line": "one"}),)),
        Reply("", (Call("read_file", {"path": "calc.py"}),)),
        Reply("", (Call("finish", {"summary": "read it"}),)),
    )
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url)
    repo = python_repo(tmp_path, REPO_FILES)
    async with handoff(settings) as client:
        done = await run_task(client, {"repo": str(repo), "instructions": "Read calc.py."})
    assert done["state"] == "succeeded" and done["summary"] == "read it"
    first = fake.requests[1].last_results()
    assert [r["is_error"] for r in first] == [True, True]
    assert "not valid JSON" in first[0]["content"] and "unknown tool 'frobnicate'" in first[1]["content"]
    second = fake.requests[2].last_results()[0]
    assert second["is_error"] and "'start_line' must be a integer" in second["content"]
    assert "def add(a, b):" in fake.requests[3].last_results()[0]["content"]
    assert fake.problems == []


async def test_a_hanging_tool_command_is_killed_at_the_per_call_timeout(
    sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str, llm: tuple[FakeLLM, str]
) -> None:
    fake, url = llm
    fake.add(
        Reply("", (Call("bash", {"command": "sleep 600 | cat; echo never"}),)),
        Reply("", (Call("bash", {"command": "echo still alive"}),)),
        Reply("", (Call("finish", {"summary": "survived"}),)),
    )
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url, profile={"tool_timeout_s": 2})
    repo = python_repo(tmp_path, REPO_FILES)
    started = time.monotonic()
    async with handoff(settings) as client:
        done = await run_task(client, {"repo": str(repo), "instructions": "Hang."})
    assert done["state"] == "succeeded" and done["summary"] == "survived"
    timed_out = fake.requests[1].last_results()[0]
    assert timed_out["content"].startswith("[timed out after 2 s: the command and its children were killed]")
    assert timed_out["is_error"] is True
    assert fake.requests[2].last_results()[0]["content"] == "[exit code 0]\nstill alive"
    assert time.monotonic() - started < 20


async def test_cancel_stops_the_agent_mid_tool_and_removes_its_container(
    sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str, llm: tuple[FakeLLM, str]
) -> None:
    fake, url = llm
    fake.add(Reply("", (Call("bash", {"command": "sleep 60"}),), sticky=True))
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url, profile={"tool_timeout_s": 120})
    repo = python_repo(tmp_path, REPO_FILES)
    async with handoff(settings) as client:
        created = (await client.post("/api/tasks", json={"repo": str(repo), "instructions": "Sleep."})).json()
        await wait_until(lambda: len(fake.requests) >= 1, timeout=30)
        await asyncio.sleep(0.5)  # the tool call is running in the container now
        started = time.monotonic()
        await client.post(f"/api/tasks/{created['id']}/cancel")
        done = await wait_for(client, created["id"], timeout=30)
    assert done["state"] == "cancelled" and time.monotonic() - started < 10
    assert done["runs"][0]["outcome"] == "cancelled" and len(fake.requests) == 1
    left = docker.DockerClient(version="1.41").containers.list(
        all=True, filters={"label": f"handoff.task={created['id']}"}
    )
    assert left == []
