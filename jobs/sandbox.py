"""The Docker sandbox: runs one agent container per run, hardened, with a wall-clock deadline.

The docker SDK is blocking, so every short call runs in a thread (``asyncio.to_thread``) and the two
log streams run in dedicated daemon threads: a ``logs(follow=True)`` read can block for the whole
run, and parking it in the loop's small default executor would starve the ``kill`` that enforces
the deadline and cancellation (see :mod:`jobs.sandbox_logs`).

Two ways to use a container: :meth:`DockerSandbox.run` runs a command profile to its end;
:meth:`~DockerSandbox.start`, :meth:`~DockerSandbox.exec` and :meth:`~DockerSandbox.stop` keep an
idle container with the same hardening for the built-in agent, whose every tool call is one
``docker exec`` (see :mod:`jobs.sandbox_exec`), run in the sandbox's own thread pool for the same
reason as the log streams.

Output: stdout and stderr are followed as two separate streams, each with its own line buffer, so a
JSON event written to stdout is never spliced with stderr bytes that arrive mid-line. Both reach
``on_line`` (stderr lines can be routed to ``on_stderr`` instead); the order *between* the two
streams is only approximate, the order within each is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
import requests

from core.errors import SandboxError, SandboxUnavailable
from core.ports import ExecResult, SandboxHandle, SandboxResult, SandboxSpec
from jobs.sandbox_exec import run_exec
from jobs.sandbox_logs import MAX_LINE, LineSplitter, LogReader

__all__ = ["MAX_LINE", "DockerSandbox", "LineSplitter", "container_name", "create_kwargs", "hardening_kwargs"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long to wait for the log streams to end after a kill before closing them by force.
_DRAIN_AFTER_KILL_S = 10.0
_LABEL_MANAGED = "handoff.managed"
_LABEL_TASK = "handoff.task"
_LABEL_RUN = "handoff.run"
_LABEL_INSTANCE = "handoff.instance"
_OOM_EXIT = 137  # 128 + SIGKILL: what a kernel OOM kill looks like through docker-init


def _parse_user(user: str) -> tuple[int, int]:
    """``"uid[:gid]"`` as numbers; names are refused because root-ness cannot be checked."""
    uid_s, _, gid_s = user.partition(":")
    if not uid_s.isdigit() or (gid_s and not gid_s.isdigit()):
        raise SandboxError(f"sandbox user must be numeric 'uid:gid', got {user!r}")
    uid, gid = int(uid_s), int(gid_s or uid_s)
    if uid == 0:
        raise SandboxError("sandbox user must not be root (uid 0)")
    return uid, gid


def container_name(run_id: str) -> str:
    """The container name for ``run_id`` (``handoff-<run_id>``, restricted to Docker's charset)."""
    return "handoff-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", run_id)


def hardening_kwargs(spec: SandboxSpec) -> dict[str, Any]:
    """The isolation and resource settings of ``spec``'s container (pure; raises SandboxError)."""
    uid, gid = _parse_user(spec.user)
    limits = spec.limits
    return {
        "network_mode": "none",  # the only ways out are the run's gateway and proxy sockets
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "user": f"{uid}:{gid}",
        "privileged": False,
        "pids_limit": limits.pids,
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,  # equal to mem_limit: no swap
        "nano_cpus": int(limits.cpus * 1_000_000_000),
        "init": True,  # docker-init reaps zombies and forwards signals
        # uid/gid because mode= is ignored when /tmp exists in the image (its mode is copied up).
        "tmpfs": {"/tmp": f"rw,exec,nosuid,nodev,size={limits.tmpfs_size},uid={uid},gid={gid}"},
        # Bounded on-disk logs: a chatty agent must not fill the host's disk.
        "log_config": {"type": "json-file", "config": {"max-size": "20m", "max-file": "2"}},
    }


def create_kwargs(spec: SandboxSpec, instance: str | None = None) -> dict[str, Any]:
    """Everything passed to ``containers.create`` for ``spec`` (pure; raises SandboxError)."""
    if not spec.workspace.is_absolute() or not spec.spec_file.is_absolute():
        raise SandboxError("sandbox workspace and spec_file must be absolute paths")
    env = {"HOME": "/tmp", **spec.env, "HANDOFF_TASK_ID": spec.task_id, "HANDOFF_RUN_ID": spec.run_id}
    volumes = {
        str(spec.workspace): {"bind": "/workspace", "mode": "rw"},
        str(spec.spec_file): {"bind": "/handoff/task.json", "mode": "ro"},
    }
    for mount in spec.mounts:
        if not mount.source.is_absolute():
            raise SandboxError("sandbox mounts must be absolute paths")
        volumes[str(mount.source)] = {"bind": mount.target, "mode": "ro"}
    return {
        "image": spec.image,
        "command": [*spec.wrapper, *spec.command],
        "name": container_name(spec.run_id),
        "labels": {
            _LABEL_TASK: spec.task_id,
            _LABEL_RUN: spec.run_id,
            _LABEL_MANAGED: "1",
            **({_LABEL_INSTANCE: instance} if instance else {}),
        },
        "environment": env,
        "working_dir": "/workspace",
        "volumes": volumes,
        "detach": True,
        **hardening_kwargs(spec),
    }


class DockerSandbox:
    """:class:`core.ports.Sandbox` on a Docker engine (docker SDK, API 1.41 by default)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        version: str = "1.41",
        timeout: int = 60,
        instance: str | None = None,
    ) -> None:
        """Remember where the engine is; the client is built on first use (no I/O here).

        ``instance`` labels this deployment's containers (``handoff.instance``) so that
        deployments (or test suites) sharing one engine never remove each other's as orphans.
        """
        self._base_url = base_url
        self._instance = instance
        self._version = version
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        # Tool calls block for up to their timeout: never in the loop's default executor.
        self._exec_pool: ThreadPoolExecutor | None = None

    def _docker(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                # Two long-lived log streams per run plus short calls: more than the default pool of 10.
                kwargs: dict[str, Any] = {
                    "version": self._version,
                    "timeout": self._timeout,
                    "max_pool_size": 32,
                }
                if self._base_url is None:
                    self._client = docker.DockerClient.from_env(**kwargs)
                else:
                    self._client = docker.DockerClient(base_url=self._base_url, **kwargs)
            return self._client

    def docker_client(self) -> docker.DockerClient:
        """The underlying client (built on first use), e.g. for image checks."""
        try:
            return self._docker()
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise SandboxUnavailable(f"sandbox unavailable: {exc}") from exc

    def close(self) -> None:
        """Close the client's connections and let the exec threads go."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._exec_pool is not None:
                self._exec_pool.shutdown(wait=False, cancel_futures=True)
                self._exec_pool = None

    def _execs(self) -> Executor:
        with self._lock:
            if self._exec_pool is None:
                self._exec_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="handoff-exec")
            return self._exec_pool

    async def _call(
        self, what: str, fn: Callable[[docker.DockerClient], T], executor: Executor | None = None
    ) -> T:
        """Run ``fn(client)`` in a thread, translating SDK failures into Handoff errors."""

        def call() -> T:
            return fn(self._docker())

        try:
            if executor is None:
                return await asyncio.to_thread(call)
            return await asyncio.get_running_loop().run_in_executor(executor, call)
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(f"sandbox image not found: {exc.explanation or exc}") from exc
        except docker.errors.APIError as exc:
            # The engine answered and refused: the spec, not the engine, is at fault.
            raise SandboxError(f"{what} failed: {exc.explanation or exc}") from exc
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise SandboxUnavailable(f"sandbox unavailable: {what}: {exc}") from exc

    async def ping(self) -> None:
        """Raise :class:`SandboxUnavailable` if the engine does not answer."""
        try:
            await self._call("ping", lambda c: c.ping())
        except SandboxError as exc:
            raise SandboxUnavailable(f"sandbox unavailable: {exc}") from exc

    async def run(
        self,
        spec: SandboxSpec,
        on_line: Callable[[str], None],
        cancel: asyncio.Event,
        on_start: Callable[[str], None] | None = None,
        *,
        on_stderr: Callable[[str], None] | None = None,
    ) -> SandboxResult:
        """Run ``spec`` to its end, streaming output lines; see :class:`core.ports.Sandbox`.

        ``on_stderr`` (optional) receives stderr lines; without it they go to ``on_line`` too.
        """
        kwargs = self._checked_kwargs(spec)
        container = await self._call("create container", lambda c: self._create(c, kwargs))
        try:
            await self._call("start container", lambda c: container.start())
            if on_start is not None:
                on_start(container.id)
            return await self._supervise(spec, container, on_line, on_stderr or on_line, cancel)
        finally:
            # Shielded so that a cancelled run (worker shutdown) still kills and removes its container.
            await asyncio.shield(self._remove_quietly(container))

    def _checked_kwargs(self, spec: SandboxSpec) -> dict[str, Any]:
        kwargs = create_kwargs(spec, self._instance)
        if not spec.workspace.is_dir():
            raise SandboxError(f"sandbox workspace {spec.workspace} is not a directory")
        if not spec.spec_file.is_file():
            # Docker would silently create a directory in place of a missing bind source.
            raise SandboxError(f"sandbox spec file {spec.spec_file} does not exist")
        for mount in spec.mounts:
            if not mount.source.exists():
                raise SandboxError(f"sandbox mount {mount.source} does not exist")
        return kwargs

    # -- long-lived containers (the built-in agent) -------------------------------------------

    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        """Start an idle, hardened container for ``spec``; see :class:`core.ports.Sandbox`."""
        # The idle command ends the container by itself shortly after the deadline, so a worker
        # that dies without stopping it leaves nothing running for long (the reaper removes it).
        idle = ["sleep", str(math.ceil(spec.limits.timeout_s) + 60)]
        kwargs = self._checked_kwargs(dataclasses.replace(spec, command=idle))
        container = await self._call("create container", lambda c: self._create(c, kwargs))
        try:
            await self._call("start container", lambda c: container.start())
        except BaseException:
            await asyncio.shield(self._remove_quietly(container))
            raise
        return SandboxHandle(container_id=str(container.id), run_id=spec.run_id, user=kwargs["user"])

    async def exec(
        self,
        handle: SandboxHandle,
        argv: list[str],
        *,
        timeout_s: float,
        stdin: bytes | None = None,
        workdir: str = "/workspace",
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run ``argv`` in ``handle``'s container; see :func:`jobs.sandbox_exec.run_exec`."""
        if not argv:
            raise SandboxError("exec needs a command")
        return await self._call(
            "exec in container",
            lambda c: run_exec(
                c.api,
                handle.container_id,
                argv,
                user=handle.user,
                timeout_s=timeout_s,
                stdin=stdin,
                workdir=workdir,
                env=env,
            ),
            self._execs(),
        )

    async def stop(self, handle: SandboxHandle) -> SandboxResult:
        """Kill and remove ``handle``'s container, reporting an out-of-memory kill."""

        def stop(client: docker.DockerClient) -> SandboxResult:
            try:
                container = client.containers.get(handle.container_id)
            except docker.errors.NotFound:
                return SandboxResult(None, container_id=handle.container_id, error="container was gone")
            state = container.attrs.get("State", {})
            code = state.get("ExitCode") if not state.get("Running") else None
            _force_remove(container)
            return SandboxResult(code, oom=bool(state.get("OOMKilled")), container_id=handle.container_id)

        return await asyncio.shield(self._call("stop container", stop))

    @staticmethod
    def _create(client: docker.DockerClient, kwargs: dict[str, Any]) -> Any:
        try:
            return client.containers.create(**kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
        # A container of the same run survived a crashed worker: it is ours and stale.
        client.containers.get(kwargs["name"]).remove(force=True)
        return client.containers.create(**kwargs)

    async def _supervise(
        self,
        spec: SandboxSpec,
        container: Any,
        on_out: Callable[[str], None],
        on_err: Callable[[str], None],
        cancel: asyncio.Event,
    ) -> SandboxResult:
        loop = asyncio.get_running_loop()
        readers = [LogReader(loop, container, False, on_out), LogReader(loop, container, True, on_err)]
        streams = asyncio.gather(*(r.done for r in readers))
        cancelled = asyncio.ensure_future(cancel.wait())
        timed_out = was_cancelled = killed = False
        error: str | None = None
        try:
            first: set[asyncio.Future[Any]] = {streams, cancelled}
            await asyncio.wait(first, timeout=spec.limits.timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if not streams.done():
                # The log streams end only when the container stops: still open means still running.
                was_cancelled = cancel.is_set()
                timed_out = not was_cancelled
                killed = await self._kill(container)
                if not killed:  # it stopped on its own meanwhile: neither cancelled nor timed out
                    was_cancelled = timed_out = False
                try:
                    await asyncio.wait_for(asyncio.shield(streams), _DRAIN_AFTER_KILL_S)
                except TimeoutError:
                    for r in readers:
                        r.close()
            with contextlib.suppress(Exception):
                await streams
            exc = streams.exception() if streams.done() and not streams.cancelled() else None
            if exc is not None:
                error = f"log stream failed: {exc}"
        finally:
            cancelled.cancel()
            for r in readers:
                r.close()
        status = await self._call("wait for container", lambda c: container.wait(timeout=self._timeout))
        exit_code: int | None = status.get("StatusCode")
        await self._call("inspect container", lambda c: container.reload())
        state = container.attrs.get("State", {})
        # cgroup v1: the kernel kills the hog, docker-init exits 137; OOMKilled is not always set.
        oom = bool(state.get("OOMKilled")) or (exit_code == _OOM_EXIT and not killed)
        return SandboxResult(exit_code, timed_out, oom, was_cancelled, container.id, error)

    async def _kill(self, container: Any) -> bool:
        """SIGKILL ``container``; False when it had already stopped."""

        def kill(_: docker.DockerClient) -> bool:
            try:
                container.kill()
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: not running any more
                    raise
                return False
            return True

        return await self._call("kill container", kill)

    async def _remove_quietly(self, container: Any) -> None:
        try:
            await self._call("remove container", lambda c: _force_remove(container))
        except (SandboxError, SandboxUnavailable) as exc:
            # The reaper's remove_orphans retries later from the labels.
            log.warning("could not remove container %s: %s", container.id, exc)

    async def _remove_where(self, keep: Callable[[dict[str, str]], bool], labels: list[str]) -> list[str]:
        def remove(client: docker.DockerClient) -> list[str]:
            removed: list[str] = []
            # The low-level listing: containers.list() inspects each container it found, and one
            # removed meanwhile (by its own run, on a shared engine) would fail the whole sweep.
            for c in client.api.containers(all=True, filters={"label": labels}):
                found: dict[str, str] = c.get("Labels") or {}
                if found.get(_LABEL_INSTANCE) != self._instance:
                    continue  # another deployment's container on a shared engine
                if not keep(found) and _force_remove(client.containers.prepare_model({"Id": c["Id"]})):
                    removed.append(str(c["Id"]))
            return removed

        return await self._call("remove containers", remove)

    async def remove_orphans(self, live_run_ids: set[str]) -> list[str]:
        """Remove Handoff containers whose run is not in ``live_run_ids``; return their ids.

        ``live_run_ids`` must hold every live run on this engine, not only this worker's: a
        worker sharing the engine would otherwise lose its containers.
        """
        return await self._remove_where(
            lambda labels: labels.get(_LABEL_RUN) in live_run_ids, [f"{_LABEL_MANAGED}=1"]
        )

    async def remove_run(self, run_id: str) -> list[str]:
        """Kill and remove every container labelled for ``run_id``; return their ids."""
        labels = [f"{_LABEL_MANAGED}=1", f"{_LABEL_RUN}={run_id}"]
        return await self._remove_where(lambda _: False, labels)


def _force_remove(container: Any) -> bool:
    """Kill and remove ``container``; False when it was already gone."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # removal already in progress elsewhere
            return False
        raise
    return True
