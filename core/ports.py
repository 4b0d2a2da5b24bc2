"""Ports: the narrow interfaces core needs from the outside world (``typing.Protocol``).

Implementations live in ``jobs/`` (arq queue, Docker sandbox, git workspace), ``github_app/`` and
``bot/`` (git credentials, post-push hooks, :class:`Integration` s); the composition root wires
them together. Reporters and notifiers have their contracts in :mod:`core.outbox`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.automations.cron import CronFields
from core.config import Limits
from core.links import PullRequestLink
from core.models import Run, Task
from core.outbox import Notifier, Reporter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRequest:
    """One job for the queue: the function's registered name, its arguments and its unique id."""

    job_id: str
    function: str
    args: tuple[Any, ...]
    defer_s: float = 0.0


class Queue(Protocol):
    """The job queue (arq over Redis)."""

    async def enqueue_jobs(self, jobs: Sequence[JobRequest]) -> list[bool]:
        """Queue ``jobs`` in one round trip; for each, ``False`` when a job with its id exists.

        Raises :class:`core.errors.QueueUnavailable` when the queue does not answer."""
        ...

    async def enqueue_run(self, task_id: str, gen: int, *, defer_s: float = 0.0) -> None:
        """Queue generation ``gen`` of ``task_id``; the job id makes a repeat a no-op."""
        ...

    async def request_cancel(self, task_id: str) -> None:
        """Tell whichever worker runs ``task_id`` to stop it now."""
        ...

    async def ping(self) -> None:
        """Raise :class:`core.errors.QueueUnavailable` if the queue does not answer."""
        ...

    async def depth(self) -> int:
        """How many jobs wait in the queue."""
        ...

    async def close(self) -> None:
        """Close the connection pool (at shutdown)."""
        ...


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted read-only into a sandbox (the run's gateway sockets, the relay)."""

    source: Path
    target: str


@dataclass(frozen=True)
class SandboxSpec:
    """Everything needed to start one agent container.

    The container's network is always ``none``. ``wrapper`` goes in front of the command it runs
    (the relay to the run's model gateway and egress proxy), ``mounts`` are read-only.
    """

    task_id: str
    run_id: str
    image: str
    command: list[str]
    workspace: Path
    spec_file: Path
    env: Mapping[str, str] = field(default_factory=dict)
    user: str = "1000:1000"
    limits: Limits = field(default_factory=Limits)
    mounts: tuple[Mount, ...] = ()
    wrapper: tuple[str, ...] = ()


@dataclass
class SandboxResult:
    """How a container ended."""

    exit_code: int | None
    timed_out: bool = False
    oom: bool = False
    cancelled: bool = False
    container_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SandboxHandle:
    """A long-lived sandbox container started by :meth:`Sandbox.start`."""

    container_id: str
    run_id: str
    user: str


@dataclass(frozen=True)
class ExecResult:
    """How one command executed in a long-lived sandbox container ended.

    ``exit_code`` is ``None`` when the command was killed at its timeout (``timed_out``) or the
    exit code could not be read. Output beyond the sandbox's cap keeps its head and tail
    (``truncated``).
    """

    exit_code: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    timed_out: bool = False
    truncated: bool = False
    duration_s: float = 0.0


class Sandbox(Protocol):
    """Runs agent containers: to their end (:meth:`run`), or long-lived for a series of commands
    (:meth:`start`, :meth:`exec`, :meth:`stop`) as the built-in agent's tools need."""

    async def run(
        self,
        spec: SandboxSpec,
        on_line: Callable[[str], None],
        cancel: asyncio.Event,
        on_start: Callable[[str], None] | None = None,
    ) -> SandboxResult:
        """Run ``spec`` to its end; ``on_line`` gets each stdout line (on the event loop).

        Ends early (``cancelled``) when ``cancel`` is set and at ``spec.limits.timeout_s``
        (``timed_out``), killing the container. ``on_start`` receives the container id.
        """
        ...

    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        """Start ``spec``'s container with the same hardening, idle until :meth:`stop`.

        ``spec.command`` is ignored: the container idles (and ends itself at
        ``spec.limits.timeout_s`` should the worker vanish without stopping it).
        """
        ...

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
        """Run ``argv`` inside the container as the sandbox user and wait for it.

        At ``timeout_s`` the command and every process it started are killed (``timed_out``).
        Raises :class:`core.errors.SandboxError` when the container is gone or not running.
        """
        ...

    async def stop(self, handle: SandboxHandle) -> SandboxResult:
        """Kill and remove the container; report whether it had been killed for memory."""
        ...

    async def remove_orphans(self, live_run_ids: set[str]) -> list[str]:
        """Remove Handoff containers whose run is not in ``live_run_ids``; return their ids."""
        ...

    async def remove_run(self, run_id: str) -> list[str]:
        """Kill and remove every container labelled for ``run_id``; return their ids."""
        ...

    async def ping(self) -> None:
        """Raise :class:`core.errors.SandboxUnavailable` if the engine does not answer."""
        ...

    def close(self) -> None:
        """Close the connection to the engine (at shutdown)."""
        ...


@dataclass(frozen=True)
class PushResult:
    """What the workspace published after a run."""

    changed: bool
    branch: str
    head_sha: str | None
    files_changed: list[str] = field(default_factory=list)
    # Paths of the work tree that were not committed, each with the reason (nested repository…).
    dropped: list[str] = field(default_factory=list)


class Workspace(Protocol):
    """A host-side checkout of the task's repository for one run."""

    path: Path

    async def prepare(self) -> None:
        """Clone the repository and check out the task branch."""
        ...

    async def publish(self, message: str) -> PushResult:
        """Commit whatever the agent changed and push the task branch."""
        ...

    async def cleanup(self) -> None:
        """Delete the checkout."""
        ...


class GitCredentials(Protocol):
    """Supplies the git auth header for a task's repository (e.g. a GitHub installation token)."""

    async def auth_header(self, task: Task) -> str | None:
        """``http.extraheader`` value for clone and push, or ``None`` for no auth."""
        ...


class PostPush(Protocol):
    """Runs on the host after a run pushed its branch (e.g. open or update the pull request)."""

    async def after_push(
        self, task: Task, run: Run, push: PushResult, summary: str | None
    ) -> PullRequestLink | None:
        """The pull request opened or updated for the push, if this hook opens one."""
        ...


class Reconciler(Protocol):
    """Catches up on what an integration missed (e.g. GitHub deliveries that failed)."""

    async def reconcile(self) -> Any:
        """One pass; called by a worker cron every few minutes."""
        ...


class Closable(Protocol):
    """Something an integration opened that must be closed at shutdown (an HTTP client, a pool)."""

    async def aclose(self) -> None:
        """Release it."""
        ...


# An arq job function: ``(ctx, *args) -> result``.
Job = Callable[..., Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class Schedule:
    """A job the worker runs on a cron schedule, once across all workers (an automation rule's)."""

    name: str
    fields: CronFields
    job: Job


@dataclass(frozen=True)
class HostedRepo:
    """A repository on a code host, as the host's App sees it (for requests that came elsewhere)."""

    repo: str  # ``owner/name`` as the host spells it
    installation_id: int
    default_branch: str
    clone_url: str


class RepositoryHost(Protocol):
    """A code host's answers about repositories, for tasks requested elsewhere (Slack on GitHub).

    Raises :class:`core.errors.HostUnavailable` when the host does not answer."""

    def hosts(self, repo: str) -> bool:
        """Whether ``repo`` names a repository of this host (``owner/name``), installed or not."""
        ...

    async def find(self, repo: str) -> HostedRepo | None:
        """The repository and the App's installation on it; ``None`` when the App is not installed."""
        ...

    async def role(self, hosted: HostedRepo, login: str) -> str:
        """``login``'s role on the repository (``admin``, ``maintain``, ``write``, ``read``, ``none``)."""
        ...

    def install_url(self, repo: str) -> str:
        """Where a person installs the App (to give it ``repo``)."""
        ...


@dataclass
class Integration:
    """What one external system (GitHub, Slack, status webhooks) plugs into the API and the worker.

    Built once per process at the composition root; ``router`` is a FastAPI router (typed loosely:
    core does not import frameworks). An integration that exposes more (the GitHub services, the
    Slack bot) subclasses this with typed fields of its own.
    """

    name: str
    reporters: list[Reporter] = field(default_factory=list)
    notifiers: list[Notifier] = field(default_factory=list)
    router: Any = None
    git_credentials: GitCredentials | None = None
    post_push: list[PostPush] = field(default_factory=list)
    # Jobs the worker registers with arq, by name (e.g. turning a recorded delivery into a task).
    jobs: dict[str, Job] = field(default_factory=dict)
    reconciler: Reconciler | None = None
    # Cron jobs (e.g. scheduled automation rules); each fires once across every worker.
    schedules: list[Schedule] = field(default_factory=list)
    # Closed, in order, when the process shuts down.
    closers: list[Closable] = field(default_factory=list)
    # A code host's answers about repositories (GitHub's), for tasks requested elsewhere.
    repositories: RepositoryHost | None = None

    async def aclose(self) -> None:
        """Close what the integration opened; a failure is logged, never stops the shutdown."""
        for closer in self.closers:
            try:
                await closer.aclose()
            except Exception as exc:
                log.warning("closing %s failed: %s", self.name, exc)
