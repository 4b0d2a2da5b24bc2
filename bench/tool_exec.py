"""Tool-call overhead: one ``bash`` tool call through the agent runtime vs a bare ``docker exec``.

Both run the same command in the same long-lived sandbox container (the one a built-in agent run
uses), interleaved so that engine drift hits both alike:

* **runtime** — the agent loop's tool step for one ``bash`` call: argument check, the call and
  result events, ``DockerSandbox.exec`` (exec create, start on the hijacked socket, demultiplexed
  output, exit code, the per-call timeout machinery) and the formatted, truncated result;
* **bare** — the docker SDK's own ``exec_run`` of the same command (create + start + inspect: the
  least any caller needs to get output and an exit code), and, for scale, the ``docker exec`` CLI.

Prints the medians (and p95) of ``--calls`` samples of each and the ratio. Target: median <= 1.3x
the bare SDK exec. Run with ``uv run python bench/tool_exec.py [--calls 100]`` (needs Docker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import summary
from core.config import Limits
from core.ports import SandboxSpec
from jobs.agent.conversation import ToolCall
from jobs.agent.loop import AgentLoop, LoopLimits
from jobs.agent.tools import ToolBox
from jobs.image import build_offline, image_exists
from jobs.sandbox import DockerSandbox

IMAGE = "handoff-sandbox:minimal"
COMMAND = "ls -la /workspace && echo done"


async def measure(calls: int) -> dict[str, Any]:
    """Start one sandbox container and time both paths ``calls`` times, interleaved."""
    client = docker.DockerClient(version="1.41")
    if not image_exists(client, IMAGE):
        build_offline(client, "minimal")
    work = Path(tempfile.mkdtemp(prefix="handoff-bench-exec-"))
    (work / "ws").mkdir()
    (work / "ws" / "README.md").write_text("bench\n")
    if os.geteuid() == 0:
        os.chown(work / "ws", 1000, 1000)
    spec_file = work / "task.json"
    spec_file.write_text("{}")
    sandbox = DockerSandbox(instance="bench-tool-exec")
    spec = SandboxSpec(
        "bench", f"bench-{os.getpid()}", IMAGE, [], work / "ws", spec_file, limits=Limits(timeout_s=600)
    )
    handle = await sandbox.start(spec)
    events: list[tuple[str, dict[str, Any]]] = []
    loop = AgentLoop(
        llm=None,  # type: ignore[arg-type]  # no model call is made: only the tool step is timed
        tools=ToolBox(sandbox, handle, timeout_s=60),
        emit=lambda t, d: events.append((t, d)),
        model="bench",
        system="",
        messages=[],
        limits=LoopLimits(max_steps=1, max_output_tokens=1),
        cancel=asyncio.Event(),
        deadline=time.monotonic() + 3600,
    )
    await loop.tools.probe()
    container = client.containers.get(handle.container_id)
    call = ToolCall("bench", "bash", json.dumps({"command": COMMAND}))
    runtime: list[float] = []
    bare: list[float] = []
    cli: list[float] = []
    docker_cli = shutil.which("docker")

    async def through_runtime() -> None:
        loop.messages.clear()
        start = time.perf_counter()
        await loop._run_tools([call])  # the loop's own tool step, events included
        runtime.append(time.perf_counter() - start)
        result = loop.messages[-1]["results"][0]["content"]
        assert result.startswith("[exit code 0]") and result.endswith("done"), result

    def bare_exec() -> None:
        start = time.perf_counter()
        code, out = container.exec_run(["sh", "-c", COMMAND], user="1000:1000", workdir="/workspace")
        bare.append(time.perf_counter() - start)
        assert code == 0 and isinstance(out, bytes) and out.endswith(b"done\n"), out

    def cli_exec() -> None:
        if docker_cli is None:
            return
        start = time.perf_counter()
        subprocess.run(
            [docker_cli, "exec", handle.container_id, "sh", "-c", COMMAND], check=True, capture_output=True
        )
        cli.append(time.perf_counter() - start)

    try:
        for _ in range(5):  # warm-up: connection pool, page cache
            await through_runtime()
            await asyncio.to_thread(bare_exec)
        runtime.clear()
        bare.clear()
        for i in range(calls):
            # Alternate the order so neither path always runs right after the other.
            if i % 2:
                await through_runtime()
                await asyncio.to_thread(bare_exec)
            else:
                await asyncio.to_thread(bare_exec)
                await through_runtime()
            if i % 4 == 0:
                await asyncio.to_thread(cli_exec)
    finally:
        await sandbox.stop(handle)
        sandbox.close()
        client.close()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "calls": calls,
        "command": COMMAND,
        "runtime_ms": summary(runtime),
        "bare_sdk_exec_ms": summary(bare),
        "ratio_p50": statistics.median(runtime) / statistics.median(bare),
    }
    if cli:
        result["docker_cli_exec_ms"] = summary(cli)
    return result


def main() -> None:
    """Run the benchmark and print the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    result = asyncio.run(measure(args.calls))
    print(json.dumps(result, indent=2))
    runtime, bare = result["runtime_ms"]["p50"], result["bare_sdk_exec_ms"]["p50"]
    print(
        f"\nbash tool call through the runtime: p50 {runtime:.1f} ms; bare docker exec (SDK): p50 {bare:.1f} ms; "
        f"ratio {result['ratio_p50']:.2f}x (target <= 1.3x)"
        + (
            f"; docker CLI exec: p50 {result['docker_cli_exec_ms']['p50']:.1f} ms"
            if "docker_cli_exec_ms" in result
            else ""
        )
    )


if __name__ == "__main__":
    main()
