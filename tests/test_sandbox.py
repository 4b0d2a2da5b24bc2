"""DockerSandbox against the real Docker engine (and its pure helpers without one)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from core.config import Limits
from core.errors import SandboxError, SandboxUnavailable
from core.ports import Mount, SandboxResult, SandboxSpec
from jobs.image import build_offline, image_exists
from jobs.sandbox import MAX_LINE, DockerSandbox, LineSplitter, create_kwargs, hardening_kwargs

IMAGE = "handoff-sandbox:minimal"
# Our own namespace: a worker started by another test on this engine must not reap our containers.
INSTANCE = "test-sandbox"
FAST = Limits(memory="64m", pids=64, cpus=0.5, timeout_s=20, tmpfs_size="16m")


# --- pure helpers (no Docker) ------------------------------------------------------------------


def _spec(tmp: Path, command: list[str], **overrides: Any) -> SandboxSpec:
    workspace = tmp / "workspace"
    workspace.mkdir(exist_ok=True)
    os.chown(workspace, 1000, 1000)  # the sandbox user must be able to write its workspace
    spec_file = tmp / "task.json"
    if not spec_file.exists():
        spec_file.write_text(json.dumps({"task": "t"}))
        spec_file.chmod(0o444)
    run_id = overrides.pop("run_id", f"test-{uuid.uuid4().hex[:12]}")
    return SandboxSpec(
        task_id="task-1",
        run_id=run_id,
        image=overrides.pop("image", IMAGE),
        command=command,
        workspace=workspace,
        spec_file=spec_file,
        limits=overrides.pop("limits", FAST),
        **overrides,
    )


def test_hardening_kwargs(tmp_path: Path) -> None:
    kw = hardening_kwargs(_spec(tmp_path, ["true"]))
    assert kw["network_mode"] == "none"
    assert kw["read_only"] is True and kw["cap_drop"] == ["ALL"] and kw["init"] is True
    assert kw["security_opt"] == ["no-new-privileges:true"]
    assert kw["mem_limit"] == kw["memswap_limit"] == "64m"
    assert kw["nano_cpus"] == 500_000_000 and kw["pids_limit"] == 64
    assert "uid=1000,gid=1000" in kw["tmpfs"]["/tmp"] and "size=16m" in kw["tmpfs"]["/tmp"]


def test_mounts_are_read_only_and_the_wrapper_goes_in_front(tmp_path: Path) -> None:
    spec = dataclasses.replace(
        _spec(tmp_path, ["claude", "-p", "x"]),
        mounts=(Mount(tmp_path / "gw", "/handoff/gw"),),
        wrapper=("/handoff/bin/handoff-forward", "-l", "127.0.0.1:8080=/handoff/gw/model.sock", "--"),
    )
    kw = create_kwargs(spec)
    assert kw["network_mode"] == "none"
    assert kw["volumes"][str(tmp_path / "gw")] == {"bind": "/handoff/gw", "mode": "ro"}
    assert kw["command"] == [*spec.wrapper, "claude", "-p", "x"]
    with pytest.raises(SandboxError, match="absolute"):
        create_kwargs(dataclasses.replace(spec, mounts=(Mount(Path("gw"), "/handoff/gw"),)))


@pytest.mark.parametrize(
    "user", ["0", "0:0", "root", "agent:1000"], ids=["uid0", "root-ids", "name", "named"]
)
def test_refuses_root_or_named_user(tmp_path: Path, user: str) -> None:
    with pytest.raises(SandboxError):
        hardening_kwargs(_spec(tmp_path, ["true"], user=user))


def test_line_splitter_joins_chunks_and_cuts_long_lines() -> None:
    s = LineSplitter(max_line=10)
    assert s.feed(b'{"a":') == []
    assert s.feed(b"1}\nplain\r\nhal") == ['{"a":1}', "plain"]
    assert s.feed(b"f\xc3") == [] and s.feed(b"\xa9\n") == ["half\u00e9"]  # UTF-8 split across chunks
    assert s.feed(b"x" * 25) == ["x" * 10]  # emitted early, the rest skipped until the newline
    assert s.feed(b"yyy\nnext") == []
    assert s.flush() == ["next"] and s.flush() == []


# --- real Docker ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    try:
        client.ping()
    except Exception as exc:
        client.close()
        pytest.skip(f"no Docker engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_image(docker_client: docker.DockerClient) -> str:
    if not image_exists(docker_client, IMAGE):
        build_offline(docker_client, "minimal")
    return IMAGE


@pytest.fixture
def sandbox(sandbox_image: str) -> Iterator[DockerSandbox]:
    box = DockerSandbox(os.environ.get("DOCKER_HOST"), instance=INSTANCE)
    yield box
    box.close()


class Collector:
    """Records what the sandbox delivers and checks it arrives on the event loop."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.loop = asyncio.get_running_loop()
        self.started: list[str] = []
        self.seen = asyncio.Event()
        self.wanted = "READY"

    def on_out(self, line: str) -> None:
        assert asyncio.get_running_loop() is self.loop
        self.out.append(line)
        if line == self.wanted:
            self.seen.set()

    def on_err(self, line: str) -> None:
        self.err.append(line)


async def _run(box: DockerSandbox, spec: SandboxSpec, c: Collector, cancel: asyncio.Event) -> SandboxResult:
    return await box.run(spec, c.on_out, cancel, c.started.append, on_stderr=c.on_err)


def _containers_of(client: docker.DockerClient, run_id: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"handoff.run={run_id}"}))


PROBE = """
echo "net:$(ls /sys/class/net | tr '\\n' ' ')"
echo "uid:$(id -u)"
grep CapEff /proc/self/status
touch /rootfile && echo root:writable || echo root:readonly
touch /tmp/x && echo tmp:writable || echo tmp:readonly
touch /workspace/x && echo ws:writable || echo ws:readonly
cat /handoff/task.json; echo
(echo x >> /handoff/task.json) && echo spec:writable || echo spec:readonly
echo "home:$HOME pwd:$(pwd) run:$HANDOFF_RUN_ID"
echo READY
exec sleep 30
"""


async def test_hardening_inside_and_out_then_cancel(
    sandbox: DockerSandbox, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, ["sh", "-c", PROBE])
    c, cancel = Collector(), asyncio.Event()
    task = asyncio.create_task(_run(sandbox, spec, c, cancel))
    await asyncio.wait_for(c.seen.wait(), 15)
    attrs = (await asyncio.to_thread(docker_client.containers.get, c.started[0])).attrs
    host, config = attrs["HostConfig"], attrs["Config"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"]
    assert config["User"] == "1000:1000" and host["Init"] is True
    assert host["PidsLimit"] == 64 and host["Memory"] == host["MemorySwap"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert "/tmp" in host["Tmpfs"] and host["AutoRemove"] is False
    assert config["Labels"] == {
        "handoff.task": "task-1",
        "handoff.run": spec.run_id,
        "handoff.managed": "1",
        "handoff.instance": INSTANCE,
    }
    assert attrs["Name"] == f"/handoff-{spec.run_id}"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/workspace"]["RW"] is True and mounts["/workspace"]["Source"] == str(spec.workspace)
    assert mounts["/handoff/task.json"]["RW"] is False

    assert "net:lo " in c.out
    assert "uid:1000" in c.out
    assert "CapEff:\t0000000000000000" in c.out
    for expected in ("root:readonly", "tmp:writable", "ws:writable", '{"task": "t"}', "spec:readonly"):
        assert expected in c.out
    assert f"home:/tmp pwd:/workspace run:{spec.run_id}" in c.out

    cancel.set()
    t0 = time.monotonic()
    result = await asyncio.wait_for(task, 10)
    assert time.monotonic() - t0 < 2.0
    assert result.cancelled and not result.timed_out and not result.oom
    assert result.container_id == c.started[0]
    assert _containers_of(docker_client, spec.run_id) == []
    # stderr is a separate stream with its own order; by the end of the run all of it arrived.
    assert any("Read-only file system" in line for line in c.err)
    assert not any(line.startswith("{") for line in c.err)


EVENTS = """
printf '{"type":"status","data":1}\\n'
echo plain
printf '{"type":"mes'; echo "to stderr" >&2; sleep 0.3; printf 'sage","data":"split"}\\n'
head -c 3000000 /dev/zero | tr '\\0' a; echo
printf 'no newline at end'
exit 3
"""


async def test_lines_in_order_split_intact_long_cut_and_exit_code(
    sandbox: DockerSandbox, tmp_path: Path
) -> None:
    lines: list[str] = []
    result = await sandbox.run(_spec(tmp_path, ["sh", "-c", EVENTS]), lines.append, asyncio.Event())
    assert result.exit_code == 3 and not (result.timed_out or result.cancelled or result.oom)
    stdout = [line for line in lines if line != "to stderr"]  # stderr goes to on_line by default
    assert "to stderr" in lines
    assert stdout[:3] == ['{"type":"status","data":1}', "plain", '{"type":"message","data":"split"}']
    assert json.loads(stdout[2])["data"] == "split"
    assert stdout[3] == "a" * MAX_LINE
    assert stdout[4:] == ["no newline at end"]


async def test_a_fast_writer_loses_no_line(sandbox: DockerSandbox, tmp_path: Path) -> None:
    # dockerd's follow stream may end before it has sent everything when the container exits
    # right after writing; what was not streamed must still arrive, in order, exactly once.
    for _ in range(4):
        c = Collector()
        script = "seq 1 20000; printf 'last without newline'; exit 3"
        result = await _run(sandbox, _spec(tmp_path, ["sh", "-c", script]), c, asyncio.Event())
        assert result.exit_code == 3
        assert c.out == [str(i) for i in range(1, 20001)] + ["last without newline"]


async def test_silent_container_ends_at_deadline_and_is_removed(
    sandbox: DockerSandbox, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, ["sleep", "1000"], limits=FAST.model_copy(update={"timeout_s": 1.5}))
    t0 = time.monotonic()
    result = await sandbox.run(spec, lambda _: None, asyncio.Event())
    assert 1.4 < time.monotonic() - t0 < 6
    assert result.timed_out and not result.cancelled
    assert _containers_of(docker_client, spec.run_id) == []


async def test_fork_bomb_is_capped_by_pids_limit(
    sandbox: DockerSandbox, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    limits = FAST.model_copy(update={"pids": 32, "timeout_s": 3})
    spec = _spec(tmp_path, ["sh", "-c", "f(){ f|f& }; f; exec sleep 1000"], limits=limits)
    c, cancel = Collector(), asyncio.Event()
    task = asyncio.create_task(_run(sandbox, spec, c, cancel))
    await asyncio.sleep(1.5)
    events = Path(f"/sys/fs/cgroup/pids/docker/{c.started[0]}/pids.events")
    if events.exists():  # cgroup v1 with the cgroupfs driver: the kernel counts refused forks
        assert int(events.read_text().split()[1]) > 0
        assert int(events.with_name("pids.current").read_text()) <= 32
    result = await task
    assert result.timed_out
    assert any("can't fork" in line for line in c.err)
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still fork
    assert _containers_of(docker_client, spec.run_id) == []


async def test_memory_hog_is_oom_killed(sandbox: DockerSandbox, tmp_path: Path) -> None:
    limits = FAST.model_copy(update={"memory": "32m", "timeout_s": 15})
    result = await sandbox.run(_spec(tmp_path, ["tail", "/dev/zero"], limits=limits), print, asyncio.Event())
    assert result.oom and not result.timed_out and result.exit_code == 137


async def test_cancelled_task_kills_and_removes_container(
    sandbox: DockerSandbox, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, ["sh", "-c", "echo READY; exec sleep 1000"])
    c = Collector()
    task = asyncio.create_task(_run(sandbox, spec, c, asyncio.Event()))
    await asyncio.wait_for(c.seen.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _containers_of(docker_client, spec.run_id) == []


async def test_remove_orphans_and_remove_run(
    sandbox: DockerSandbox, docker_client: docker.DockerClient
) -> None:
    def make(run_id: str) -> Any:
        labels = {
            "handoff.managed": "1",
            "handoff.run": run_id,
            "handoff.task": "t",
            "handoff.instance": INSTANCE,
        }
        return docker_client.containers.create(IMAGE, ["sleep", "60"], labels=labels, network_mode="none")

    tag = uuid.uuid4().hex[:8]
    live, dead, other = make(f"live-{tag}"), make(f"dead-{tag}"), make(f"other-{tag}")
    # Another deployment's container (no instance label) with a dead run is not ours to reap.
    foreign = docker_client.containers.create(
        IMAGE, ["sleep", "60"], labels={"handoff.managed": "1", "handoff.run": f"foreign-{tag}"}
    )
    try:
        removed = await sandbox.remove_orphans({f"live-{tag}", f"other-{tag}"})
        assert removed == [dead.id]
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(str(dead.id))
        assert docker_client.containers.get(live.id).id == live.id
        assert docker_client.containers.get(str(foreign.id)).id == foreign.id
        assert await sandbox.remove_run(f"other-{tag}") == [other.id]
        assert await sandbox.remove_run(f"other-{tag}") == []
    finally:
        for c in (live, dead, other, foreign):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


# docker 7.2's UnixHTTPConnection leaks its socket when connect() fails; collected below.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_unreachable_engine_is_unavailable(tmp_path: Path) -> None:
    box = DockerSandbox("unix:///nonexistent.sock")
    try:
        with pytest.raises(SandboxUnavailable, match="sandbox unavailable"):
            await box.ping()
        with pytest.raises(SandboxUnavailable):
            await box.run(_spec(tmp_path, ["true"]), print, asyncio.Event())
    finally:
        box.close()
        gc.collect()


async def test_missing_image_is_a_sandbox_error(sandbox: DockerSandbox, tmp_path: Path) -> None:
    spec = _spec(tmp_path, ["true"], image="handoff-sandbox:does-not-exist")
    with pytest.raises(SandboxError, match="not found"):
        await sandbox.run(spec, print, asyncio.Event())
    await sandbox.ping()
