"""The long-lived sandbox container and the agent's tools in it, against the real Docker engine.

Each test gets an idle, hardened container (``DockerSandbox.start``) over a throwaway workspace,
and runs commands and tools in it with ``docker exec``: exit codes, stdin, separate streams, the
per-call timeout that kills a whole process tree, and every file tool on busybox (no ripgrep, no
bash) and on Debian (ripgrep, bash).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.config import Limits
from core.errors import SandboxError
from core.ports import SandboxHandle, SandboxSpec
from jobs.agent.conversation import ToolCall
from jobs.agent.tools import ToolBox, check_arguments
from jobs.sandbox import DockerSandbox
from tests.support.agents import ensure_debian_image

INSTANCE = "test-agent-sandbox"


@pytest.fixture(scope="session")
def debian_image() -> str:
    """The Debian sandbox image (python3, git, ripgrep), built offline once if missing."""
    return ensure_debian_image()


def _spec(tmp: Path, image: str) -> SandboxSpec:
    workspace = tmp / "workspace"
    workspace.mkdir()
    (workspace / "app.py").write_text(
        "def greet():\n    return 'hello'\n\n\ndef part():\n    return 'hello'\n"
    )
    (workspace / "pkg").mkdir()
    (workspace / "pkg" / "mod.py").write_text("VALUE = 42  # the answer\n")
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("[core]\n")
    for path in [workspace, *workspace.rglob("*")]:
        os.chown(path, 1000, 1000)
    spec_file = tmp / "task.json"
    spec_file.write_text(json.dumps({"task": "t"}))
    limits = Limits(memory="128m", pids=64, cpus=1.0, timeout_s=60, tmpfs_size="16m")
    return SandboxSpec(
        "task-agent", f"agent-{uuid.uuid4().hex[:10]}", image, [], workspace, spec_file, limits=limits
    )


@pytest.fixture
async def box(tmp_path: Path, sandbox_image: str) -> AsyncIterator[ToolBox]:
    sandbox = DockerSandbox(instance=INSTANCE)
    handle = await sandbox.start(_spec(tmp_path, sandbox_image))
    tools = ToolBox(sandbox, handle, timeout_s=20, output_chars=4000)
    await tools.probe()
    yield tools
    await sandbox.stop(handle)
    sandbox.close()


@pytest.fixture
async def debian_box(tmp_path: Path, debian_image: str) -> AsyncIterator[ToolBox]:
    sandbox = DockerSandbox(instance=INSTANCE)
    handle = await sandbox.start(_spec(tmp_path, debian_image))
    tools = ToolBox(sandbox, handle, timeout_s=20, output_chars=4000)
    await tools.probe()
    yield tools
    await sandbox.stop(handle)
    sandbox.close()


async def _tool(tools: ToolBox, name: str, **args: object) -> tuple[str, bool]:
    call = ToolCall("c1", name, json.dumps(args))
    run = await tools.run(call, check_arguments(call))
    return run.result.content, run.result.is_error


async def test_exec_exit_code_streams_stdin_and_hardening(box: ToolBox) -> None:
    r = await box.exec(["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (3, b"out\n", b"err\n", False)
    data = os.urandom(300_000)
    r = await box.exec(["sh", "-c", "cat > /tmp/blob; wc -c < /tmp/blob"], 10, stdin=data)
    assert r.stdout.strip() == b"300000"
    r = await box.exec(["sh", "-c", "id -u; touch /etc/x 2>&1; ip link 2>/dev/null | grep -c eth0; true"], 10)
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "1000" and "Read-only file system" in lines[1]
    assert "eth0" not in r.stdout.decode()  # network_mode none: loopback only


async def test_a_hanging_command_and_its_children_are_killed_at_the_timeout(box: ToolBox) -> None:
    started = time.monotonic()
    r = await box.exec(["sh", "-c", "sleep 300 | cat & sleep 300; echo never"], 1.5)
    assert r.timed_out and r.exit_code is None and time.monotonic() - started < 6
    ps = await box.exec(["ps", "-o", "pid,args"], 10)
    assert b"sleep 300" not in ps.stdout  # the whole tree is gone, not just the shell
    assert (await box.exec(["true"], 5)).exit_code == 0  # and the container still works


async def test_output_is_capped_keeping_head_and_tail(box: ToolBox) -> None:
    text, is_error = await _tool(box, "bash", command="seq 1 200000; echo done >&2")
    assert not is_error and text.startswith("[exit code 0]\n1\n2\n3\n")
    assert "characters cut" in text and text.endswith("[stderr]\ndone") and len(text) < 4200


async def test_exec_in_a_stopped_container_is_a_sandbox_error(tmp_path: Path, sandbox_image: str) -> None:
    sandbox = DockerSandbox(instance=INSTANCE)
    handle = await sandbox.start(_spec(tmp_path, sandbox_image))
    stopped = await sandbox.stop(handle)
    assert stopped.container_id == handle.container_id and not stopped.oom
    with pytest.raises(SandboxError):
        await sandbox.exec(handle, ["true"], timeout_s=5)
    gone = SandboxHandle("0" * 64, handle.run_id, "1000:1000")
    assert (await sandbox.stop(gone)).error == "container was gone"
    sandbox.close()


async def test_file_tools_on_busybox(box: ToolBox) -> None:
    assert box.shell == "sh" and not box.has_rg
    text, err = await _tool(box, "read_file", path="app.py", start_line=2, end_line=2)
    assert (text, err) == ("[app.py: lines 2-2 of 6]\n     2\t    return 'hello'\n", False)
    text, err = await _tool(box, "read_file", path="missing.py")
    assert err and text.startswith("cannot read missing.py")
    text, err = await _tool(box, "edit_file", path="app.py", old_string="'hello'", new_string="'hi'")
    assert err and "occurs 2 times" in text
    text, err = await _tool(box, "edit_file", path="app.py", old_string="nothing like this", new_string="x")
    assert err and "was not found" in text
    text, err = await _tool(
        box,
        "edit_file",
        path="app.py",
        old_string="def part():\n    return 'hello'",
        new_string="def part():\n    return 'part'",
    )
    assert (text, err) == ("edited app.py at line 5", False)
    text, err = await _tool(box, "write_file", path="new/dir/notes.md", content="héllo\n")
    assert (text, err) == ("wrote 7 bytes to new/dir/notes.md", False)
    content, _ = await _tool(box, "bash", command="cat new/dir/notes.md; stat -c %u new/dir/notes.md")
    assert content == "[exit code 0]\nhéllo\n1000"
    listing, _ = await _tool(box, "list_files")
    assert listing.splitlines() == ["app.py", "new/dir/notes.md", "pkg/mod.py"]  # .git left out
    found, _ = await _tool(box, "search", pattern="return '(hi|part)'", glob="*.py")
    assert found == "app.py:6:    return 'part'"
    none, err = await _tool(box, "search", pattern="zzz-not-there")
    assert (none, err) == ("no matches", False)
    assert box.changed == {"app.py", "new/dir/notes.md"}


async def test_file_tools_with_ripgrep_and_bash_on_debian(debian_box: ToolBox) -> None:
    box = debian_box
    assert box.shell == "bash" and box.has_rg
    text, _ = await _tool(box, "bash", command="echo $BASH_VERSION | cut -c1")
    assert text == "[exit code 0]\n5"
    found, _ = await _tool(box, "search", pattern="VALUE = \\d+")
    assert found == "pkg/mod.py:1:VALUE = 42  # the answer"
    listing, _ = await _tool(box, "list_files", path="pkg")
    assert listing == "pkg/mod.py"
