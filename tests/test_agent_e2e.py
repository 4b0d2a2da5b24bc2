"""End to end: the built-in agent fixes a really failing test, asks and resumes, redacts secrets;
the Claude Code and Codex profiles are translated. REST API → arq worker → Docker → git push, with
the scripted fake LLM (loopback only) standing in for the Anthropic and OpenAI APIs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from tests.fakes.llm import API_KEY, Call, FakeLLM, Reply
from tests.support.agents import agent_settings, ensure_debian_image, events, handoff, python_repo, run_task
from tests.support.env import LiveServer, git
from tests.support.waiting import wait_for

DATA = Path(__file__).parent / "data" / "agent"
FIX = [
    Reply("Let me read the failing test first.", (Call("read_file", {"path": "tests/test_calc.py"}),)),
    Reply("", (Call("bash", {"command": "python3 -m unittest -q"}),)),
    Reply(
        "`add` subtracts; fixing it.",
        (Call("edit_file", {"path": "calc.py", "old_string": "return a - b", "new_string": "return a + b"}),),
    ),
    Reply("", (Call("bash", {"command": "python3 -m unittest -q"}),)),
    Reply("", (Call("finish", {"summary": "Fixed add() in calc.py: it subtracted instead of adding."}),)),
]


@pytest.fixture(scope="session")
def debian_image() -> str:
    return ensure_debian_image()


@pytest.fixture
async def llm() -> AsyncIterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()
    async with LiveServer(fake.app) as server:
        yield fake, server.url


async def _fix_failing_test(
    settings_args: tuple[str, str, Path], llm: tuple[FakeLLM, str], agent: str
) -> None:
    fake, url = llm
    fake.add(*FIX)
    database_url, redis_url, tmp_path = settings_args
    settings = agent_settings(database_url, redis_url, tmp_path, url, image="handoff-sandbox:debian")
    repo = python_repo(tmp_path)
    async with handoff(settings) as client:
        done = await run_task(
            client, {"repo": str(repo), "instructions": "Make the tests pass.", "agent": agent}
        )
        assert done["state"] == "succeeded", done
        run = done["runs"][0]
        stored = await events(client, run["id"])
    # The change is on the pushed branch; main is untouched.
    branch = f"handoff/{done['id']}"
    assert done["branch"] == branch
    assert "return a + b" in git("--git-dir", str(repo), "show", f"{branch}:calc.py")
    assert "return a - b" in git("--git-dir", str(repo), "show", "main:calc.py")
    assert done["summary"] == "Fixed add() in calc.py: it subtracted instead of adding."
    # Tokens, cost, model and steps are recorded on the run (5 calls of 1000 in / 100 out).
    price = (3.0, 15.0) if fake.requests[0].api == "anthropic" else (2.0, 8.0)
    assert (run["tokens_in"], run["tokens_out"], run["steps"]) == (5000, 500, 5)
    assert run["cost_usd"] == pytest.approx(5 * (1000 * price[0] + 100 * price[1]) / 1e6)
    assert run["model"] == ("claude-test" if agent != "agent-openai" else "gpt-test")
    # The run's events: setup, streamed text, each tool call and its result, the result.
    kinds = [e["type"] for e in stored]
    assert kinds.count("tool") == 8 and "message" in kinds and "result" in kinds
    setup = [e["data"] for e in stored if e["type"] == "progress" and e["data"].get("step") == "setup"]
    assert setup[-1] == {"step": "setup", "command": "python3 --version", "exit_code": 0}
    results = [e["data"] for e in stored if e["type"] == "tool" and e["data"]["phase"] == "result"]
    assert [r["name"] for r in results] == ["read_file", "bash", "edit_file", "bash"]
    assert results[1]["exit_code"] == 1 and results[3]["exit_code"] == 0
    assert "Let me read the failing test first." in "".join(
        e["data"]["text"] for e in stored if e["type"] == "message"
    )
    # What the model was sent: tools, context, then each tool's real result from the sandbox.
    reqs = fake.requests
    assert len(reqs) == 5 and fake.problems == []
    assert reqs[0].tool_names() == [
        "bash",
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search",
        "finish",
        "ask",
    ]
    assert "Handoff's coding agent" in reqs[0].system()
    context = reqs[0].user_text()
    for expected in (
        "Make the tests pass.",
        "Keep functions tiny.",  # AGENTS.md
        "The calculator is integer-only.",  # .handoff.yml notes
        "$ python3 --version\n[exit code 0]\nPython 3.",  # setup, run in the sandbox
        "Run the tests with: `python3 -m unittest -q`",
    ):
        assert expected in context
    assert "self.assertEqual(add(2, 3), 5)" in reqs[1].last_results()[0]["content"]
    failing = reqs[2].last_results()[0]["content"]
    assert failing.startswith("[exit code 1]") and "AssertionError: -1 != 5" in failing
    assert reqs[3].last_results()[0]["content"] == "edited calc.py at line 5"
    passing = reqs[4].last_results()[0]["content"]
    assert passing.startswith("[exit code 0]") and passing.rstrip().endswith("OK")
    left = docker.DockerClient(version="1.41").containers.list(
        all=True, filters={"label": f"handoff.task={done['id']}"}
    )
    assert left == []


async def test_agent_fixes_a_failing_test_end_to_end(
    database_url: str, redis_url: str, tmp_path: Path, debian_image: str, llm: tuple[FakeLLM, str]
) -> None:
    await _fix_failing_test((database_url, redis_url, tmp_path), llm, "agent")


@pytest.mark.parametrize("agent", ["agent-openai", "agent-json"], ids=["openai-stream", "anthropic-json"])
async def test_agent_fixes_a_failing_test_on_other_wires(
    sqlite_url: str, redis_url: str, tmp_path: Path, debian_image: str, llm: tuple[FakeLLM, str], agent: str
) -> None:
    await _fix_failing_test((sqlite_url, redis_url, tmp_path), llm, agent)


async def test_ask_waits_for_the_answer_then_resumes(
    sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str, llm: tuple[FakeLLM, str]
) -> None:
    fake, url = llm
    fake.add(
        Reply("", (Call("write_file", {"path": "NOTES.md", "content": "wip\n"}),)),
        Reply("I need a decision.", (Call("ask", {"question": "Should add() accept floats too?"}),)),
        Reply("", (Call("write_file", {"path": "FLOATS.md", "content": "yes\n"}),)),
        Reply("", (Call("finish", {"summary": "add() accepts floats"}),)),
    )
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url)
    repo = python_repo(tmp_path, {".handoff.yml": "setup: echo ready\n"})
    async with handoff(settings) as client:
        waiting = await run_task(
            client, {"repo": str(repo), "instructions": "Extend add()."}, states={"waiting"}
        )
        assert waiting["state_reason"] == "question: Should add() accept floats too?"
        assert waiting["runs"][0]["outcome"] == "waiting"
        asked = await events(client, waiting["runs"][0]["id"])
        assert {"question": "Should add() accept floats too?"} in [
            e["data"] for e in asked if e["type"] == "question"
        ]
        # The work so far is on the branch; a free slot does not resume the task (reaper runs every 1 s).
        assert git("--git-dir", str(repo), "show", f"handoff/{waiting['id']}:NOTES.md") == "wip"
        await asyncio.sleep(2.5)
        assert (await client.get(f"/api/tasks/{waiting['id']}")).json()["state"] == "waiting"
        assert len(fake.requests) == 2
        answered = await client.post(
            f"/api/tasks/{waiting['id']}/followup", json={"text": "Yes, floats too."}
        )
        assert answered.json()["state"] == "queued"
        done = await wait_for(client, waiting["id"], timeout=60)
    assert done["state"] == "succeeded" and done["summary"] == "add() accepts floats"
    assert [r["outcome"] for r in done["runs"]] == ["waiting", "succeeded"]
    assert done["links"].get("conversation") is None  # consumed by the resumed run
    # The resumed run continued the same conversation, with the answer as the ask call's result.
    resumed = fake.requests[2]
    assert "Extend add()." in resumed.user_text()
    results = resumed.tool_results()
    assert results[0]["content"] == "wrote 4 bytes to NOTES.md"
    assert results[-1]["content"] == "Answer from @api:\n\nYes, floats too."
    assert fake.problems == []
    for name, text in (("NOTES.md", "wip"), ("FLOATS.md", "yes")):
        assert git("--git-dir", str(repo), "show", f"handoff/{done['id']}:{name}") == text


async def test_secrets_are_redacted_from_events_and_summary(
    sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str, llm: tuple[FakeLLM, str]
) -> None:
    fake, url = llm
    leaked = [
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "corp-998877",
        API_KEY,
        "xoxb-1234567890-abcdefghij",
    ]
    fake.add(
        Reply(
            f"My token is {leaked[0]} oops", (Call("bash", {"command": f"echo {leaked[1]}; echo {API_KEY}"}),)
        ),
        Reply("", (Call("finish", {"summary": f"done; leaked {leaked[3]} here"}),)),
    )
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url, secret_patterns=["corp-[0-9]{6}"])
    repo = python_repo(tmp_path)
    async with handoff(settings) as client:
        done = await run_task(client, {"repo": str(repo), "instructions": "Print things."})
        stored = json.dumps(await events(client, done["runs"][0]["id"]))
    assert done["state"] == "succeeded"
    for secret in leaked:
        assert secret not in stored and secret not in (done["summary"] or "")
    assert stored.count("[REDACTED]") >= 4 and done["summary"] == "done; leaked [REDACTED] here"
    # The model itself saw the real output (redaction is for what Handoff stores and posts).
    assert API_KEY in fake.requests[1].last_results()[0]["content"]


@pytest.mark.parametrize(
    ("agent", "stream", "usage", "summary"),
    [
        (
            "claude-code",
            "claude-code-fix-test.jsonl",
            (69122, 412, 0.0583271, 9),
            "Fixed `add()` in `calc.py`",
        ),
        (
            "codex",
            "codex-fix-test.jsonl",
            (24763, 1222, (24763 * 2 + 1222 * 8) / 1e6, 7),
            "Fixed `add()` in calc.py",
        ),
    ],
    ids=["claude-code", "codex"],
)
async def test_cli_profiles_are_translated(
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
    sandbox_image: str,
    agent: str,
    stream: str,
    usage: tuple[int, int, float, int],
    summary: str,
) -> None:
    settings = agent_settings(sqlite_url, redis_url, tmp_path, "http://127.0.0.1:9")
    recorded = (DATA / stream).read_text()
    repo = python_repo(tmp_path, {"claude.jsonl": recorded, "codex.jsonl": recorded})
    async with handoff(settings) as client:
        done = await run_task(client, {"repo": str(repo), "instructions": "Fix it.", "agent": agent})
        stored = await events(client, done["runs"][-1]["id"])
    assert done["state"] == "succeeded", done
    run = done["runs"][-1]
    assert (run["tokens_in"], run["tokens_out"], run["steps"]) == (usage[0], usage[1], usage[3])
    assert run["cost_usd"] == pytest.approx(usage[2])
    assert run["model"] == ("claude-sonnet-4-5-20250929" if agent == "claude-code" else "gpt-test")
    assert done["summary"].startswith(summary)
    kinds = {e["type"] for e in stored}
    assert {"tool", "message", "result"} <= kinds
    # Every line was understood (Codex's reasoning summaries are logged as such).
    assert all(e["data"]["text"].startswith("reasoning: ") for e in stored if e["type"] == "log")


async def test_a_cli_profile_gets_a_gateway_token_and_the_proxy_never_a_key(
    sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str
) -> None:
    settings = agent_settings(sqlite_url, redis_url, tmp_path, "http://127.0.0.1:9")
    repo = python_repo(tmp_path)
    async with handoff(settings) as client:
        done = await run_task(client, {"repo": str(repo), "instructions": "x", "agent": "envdump"})
        stored = await events(client, done["runs"][-1]["id"])
    assert done["state"] == "succeeded", done
    lines = [e["data"]["text"] for e in stored if e["type"] == "log"]
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    # The key variable holds the run's gateway token (redacted from events like any secret), and
    # the base URL is the gateway inside the container — not the provider, which it cannot reach.
    assert env["ANTHROPIC_API_KEY"] == "[REDACTED]" and env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8080"
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128" and env["NO_PROXY"] == "127.0.0.1,localhost"
    assert not set(env) & {"OPENAI_API_KEY", "GITHUB_TOKEN", "SLACK_BOT_TOKEN", "DATABASE_URL", "REDIS_URL"}
    assert {"HANDOFF_INSTRUCTIONS", "HOME", "HANDOFF_MODEL"} <= set(env)


async def test_a_retried_question_resumes_without_an_answer(
    sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str, llm: tuple[FakeLLM, str]
) -> None:
    fake, url = llm
    fake.add(
        Reply("", (Call("ask", {"question": "Floats?"}),)),
        Reply("", (Call("finish", {"summary": "decided alone"}),)),
    )
    settings = agent_settings(sqlite_url, redis_url, tmp_path, url)
    repo = python_repo(tmp_path, {".handoff.yml": "notes: x\n"})
    async with handoff(settings) as client:
        waiting = await run_task(
            client, {"repo": str(repo), "instructions": "Extend add()."}, states={"waiting"}
        )
        await client.post(f"/api/tasks/{waiting['id']}/retry")
        done = await wait_for(client, waiting["id"], timeout=60)
    assert done["state"] == "succeeded" and done["summary"] == "decided alone"
    assert (
        fake.requests[1].last_results()[0]["content"].startswith("No answer was given (the task was retried)")
    )
