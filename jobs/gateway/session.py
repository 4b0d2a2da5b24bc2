"""One run's way out of its sandbox: the model gateway and the egress proxy, set up and torn down.

:class:`RunGateway` makes the run's directory (``<base>/runs/<run id>``, mounted read-only into
the container at :data:`CONTAINER_DIR`), binds ``model.sock`` and ``egress.sock`` in it, serves the
gateway and the proxy on them, and returns a :class:`SandboxAccess`: the environment, mounts and
command wrapper that let a container whose network is ``none`` reach them through the forwarder.

Permissions: the directory stays ``0700`` while the sockets are bound; then each socket is given
to the sandbox user (``0600``, owner ``uid:gid`` of the profile — only that user and root can
connect) and the directory opened to traversal (``0711``). A worker that is not root cannot hand a
socket to another user, so its sockets are ``0666`` instead (the gateway still requires its token).

:meth:`RunGateway.close` revokes the token, stops both servers and deletes the directory: the token
and the sockets die with the run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.budget import Budget
from core.config import Price, Profile
from core.ports import Mount
from core.settings import Settings
from jobs.gateway.egress import EgressProxy
from jobs.gateway.forwarder import CONTAINER_PATH, forwarder_binary, wrap_command
from jobs.gateway.meter import RunMeter, Usage
from jobs.gateway.model import ModelGateway, Provider, Upstream
from jobs.gateway.policy import EgressDecision, EgressPolicy

CONTAINER_DIR = "/handoff/gw"
MODEL_PORT = 8080
PROXY_PORT = 3128
#: Environment variables a container's proxy settings are read from, in both spellings.
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
_SUN_PATH_MAX = 100


@dataclass(frozen=True)
class ModelAccess:
    """What the model gateway of a run allows and where it forwards to."""

    upstreams: dict[Provider, Upstream]
    provider: Provider  # the API the CLI speaks (its base URL and key variables are set)
    models: frozenset[str] | None
    budget: Budget
    price_of: Callable[[str], Price | None]


@dataclass(frozen=True)
class SandboxAccess:
    """How a container reaches the run's gateway and proxy."""

    env: dict[str, str]
    mounts: tuple[Mount, ...]  # read-only: the run's directory, the forwarder
    listeners: dict[int, str]  # loopback port -> socket path inside the container

    @property
    def wrapper(self) -> tuple[str, ...]:
        """What goes in front of the container's command (nothing when there is nothing to reach)."""
        return tuple(wrap_command(self.listeners, [])) if self.listeners else ()

    def wrap(self, command: list[str]) -> list[str]:
        """``command`` behind the forwarder (unchanged when there is nothing to forward)."""
        return [*self.wrapper, *command]


def new_token() -> str:
    """A gateway token: 256 random bits, shaped so that nobody takes it for a provider's key."""
    return "hgw_" + secrets.token_urlsafe(32)


def _bind_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    target = str(path)
    dir_fd: int | None = None
    if len(target) > _SUN_PATH_MAX:
        # sun_path holds ~108 bytes; /proc/self/fd/N names the directory in a few.
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        target = f"/proc/self/fd/{dir_fd}/{path.name}"
    try:
        sock.bind(target)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    sock.setblocking(False)
    return sock


@dataclass
class RunGateway:
    """The gateway and proxy of one run; use as ``async with RunGateway(...) as access``."""

    run_id: str
    base_dir: Path
    uid: int | None  # the sandbox user, who gets the sockets (None: a user the sandbox refuses)
    gid: int | None
    on_event: Callable[[str, dict[str, Any]], None]
    model: ModelAccess | None = None
    egress_allow: list[str] | None = None  # None: no proxy at all; []: every attempt refused
    on_exhausted: Callable[[str], None] | None = None
    policy_factory: Callable[[list[str]], EgressPolicy] = EgressPolicy
    token: str = field(default_factory=new_token)
    gateway: ModelGateway | None = field(default=None, init=False)
    proxy: EgressProxy | None = field(default=None, init=False)
    run_dir: Path | None = field(default=None, init=False)

    async def __aenter__(self) -> SandboxAccess:
        try:
            return await self.start()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> SandboxAccess:
        """Bind the sockets, start the servers, and say how the container reaches them."""
        if self.model is None and self.egress_allow is None:
            return SandboxAccess({}, (), {})
        binary = forwarder_binary(self.base_dir / "bin")
        runs = self.base_dir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o711)
        os.chmod(runs, 0o711)
        self.run_dir = runs / self.run_id
        shutil.rmtree(self.run_dir, ignore_errors=True)  # a crashed worker's leftovers
        self.run_dir.mkdir(mode=0o700)
        env: dict[str, str] = {}
        listeners: dict[int, str] = {}
        sockets: list[Path] = []
        if self.model is not None:
            token = self.token
            self.gateway = ModelGateway(
                token=token,
                upstreams=self.model.upstreams,
                models=self.model.models,
                meter=RunMeter(self.model.budget, self.model.price_of),
                on_usage=self._usage,
                on_exhausted=self.on_exhausted,
                on_refused=self._refused,
            )
            path = self.run_dir / "model.sock"
            await self.gateway.start(_bind_unix(path))
            sockets.append(path)
            listeners[MODEL_PORT] = f"{CONTAINER_DIR}/model.sock"
            base = f"http://127.0.0.1:{MODEL_PORT}"
            if self.model.provider == "anthropic":
                env.update(ANTHROPIC_BASE_URL=base, ANTHROPIC_API_KEY=token)
            else:
                env.update(OPENAI_BASE_URL=f"{base}/v1", OPENAI_API_KEY=token)
            env["HANDOFF_MODEL_GATEWAY"] = base
        if self.egress_allow is not None:
            self.proxy = EgressProxy(self.policy_factory(self.egress_allow), self._decision)
            path = self.run_dir / "egress.sock"
            await self.proxy.start(_bind_unix(path))
            sockets.append(path)
            listeners[PROXY_PORT] = f"{CONTAINER_DIR}/egress.sock"
            env.update(dict.fromkeys(_PROXY_VARS, f"http://127.0.0.1:{PROXY_PORT}"))
            env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        for path in sockets:
            self._hand_over(path)
        os.chmod(self.run_dir, 0o711)
        return SandboxAccess(
            env, (Mount(self.run_dir, CONTAINER_DIR), Mount(binary, CONTAINER_PATH)), listeners
        )

    def _hand_over(self, path: Path) -> None:
        try:
            os.chown(path, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)
            os.chmod(path, 0o600)
        except PermissionError:
            os.chmod(path, 0o666)

    async def close(self) -> None:
        """Revoke the token, stop both servers, delete the run's directory."""
        if self.gateway is not None:
            await self.gateway.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def meters(self) -> bool:
        """True when the run's model calls go through (and are metered by) the gateway."""
        return self.model is not None

    @property
    def meter(self) -> RunMeter | None:
        """The run's metered model usage (``None`` without a model gateway)."""
        return self.gateway.meter if self.gateway is not None else None

    def _usage(self, usage: Usage) -> None:
        self.on_event("progress", usage.event_data())

    def _refused(self, path: str, reason: str) -> None:
        self.on_event("log", {"text": f"model gateway refused {path}: {reason}", "gateway": {"path": path}})

    def _decision(self, decision: EgressDecision) -> None:
        with contextlib.suppress(Exception):  # recording must never break the proxy
            self.on_event("log", decision.event_data())


def for_profile(
    profile: Profile,
    settings: Settings,
    *,
    run_id: str,
    base_dir: Path,
    uid: int | None,
    gid: int | None,
    budget: Budget,
    price_of: Callable[[str], Price | None],
    on_event: Callable[[str, dict[str, Any]], None],
    on_exhausted: Callable[[str], None],
) -> RunGateway:
    """What a run of ``profile`` gets: a model gateway for a CLI profile that names its key
    variable (``api_key_env``), an egress proxy for a profile with ``egress`` — and for every such
    CLI profile, so that whatever it tries to reach is refused and recorded rather than unseen.
    """
    model: ModelAccess | None = None
    if profile.kind == "command" and profile.api_key_env is not None:
        upstreams: dict[Provider, Upstream] = {}
        if settings.anthropic_api_key is not None:
            base = settings.anthropic_base_url or "https://api.anthropic.com"
            upstreams["anthropic"] = Upstream(base, settings.anthropic_api_key.get_secret_value())
        if settings.openai_api_key is not None or settings.openai_base_url:
            # A local OpenAI-compatible server (OPENAI_BASE_URL) often needs no key at all.
            key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
            upstreams["openai"] = Upstream(settings.openai_base_url or "https://api.openai.com/v1", key)
        provider: Provider = "anthropic" if profile.api_key_env == "ANTHROPIC_API_KEY" else "openai"
        model = ModelAccess(upstreams, provider, profile.gateway_models, budget, price_of)
    egress = profile.egress.allow if profile.egress is not None else ([] if model is not None else None)
    return RunGateway(
        run_id, base_dir, uid, gid, on_event, model=model, egress_allow=egress, on_exhausted=on_exhausted
    )
