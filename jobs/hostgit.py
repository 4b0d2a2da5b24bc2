"""Every git process the host runs: a fixed repository, a minimal environment, nothing inherited.

Git reads configuration, hooks, attributes, alternates and helpers from many places: the system
and global config, ``$HOME``, ``$XDG_CONFIG_HOME``, ``GIT_*`` variables, the repository's own
``config`` (and what it ``include``\\ s), and — through discovery — any directory above the working
directory. A worker's environment also holds secrets (model keys, Slack tokens, the installation
token) that a helper git starts would inherit. So each host git process gets an environment built
for it (:func:`git_env`): no inherited variable but the few that locate certificates and proxies,
no system or global config, an empty ``HOME``, discovery fenced by ``GIT_CEILING_DIRECTORIES``,
and always an explicit ``--git-dir`` naming a repository the host created and no sandbox ever sees.
Hooks and fsmonitor are switched off with ``-c`` on every call, and only the protocols the remote
needs are allowed.

The auth header (a GitHub installation token) travels only on commands that talk to the remote,
through ``GIT_CONFIG_*`` variables — never in argv (``/proc/<pid>/cmdline`` is world-readable),
never written to a config file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NamedTuple
from urllib.parse import unquote, urlparse

from core.errors import WorkspaceError

DEFAULT_TIMEOUT_S = 300.0
# Variables a host git may inherit: where the CA certificates and proxies are. Nothing else.
_PASS_THROUGH = (
    "PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
)
# On every call. Repository config cannot turn these back on: ``-c`` wins over every file.
SAFE_CONFIG = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.untrackedCache=false",
    "-c", "core.sshCommand=false",
    "-c", "credential.helper=",
    "-c", "protocol.allow=never",
    "-c", "submodule.recurse=false",
    "-c", "push.recurseSubmodules=no",
    "-c", "fetch.recurseSubmodules=false",
    "-c", "core.protectNTFS=true",
    "-c", "core.protectHFS=true",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
)  # fmt: skip


class GitOut(NamedTuple):
    """What one git process returned."""

    rc: int
    stdout: bytes
    stderr: str


def is_local_remote(remote: str) -> bool:
    """True for a filesystem path or ``file://`` URL, false for network remotes."""
    scp_like = re.match(r"^[\w.-]+@[\w.-]+:", remote)  # git@github.com:org/repo.git
    return remote.startswith("file://") or ("://" not in remote and not scp_like)


def protocol_config(remote: str) -> tuple[str, ...]:
    """``-c protocol.<name>.allow=always`` for exactly the transport ``remote`` needs (and, for a
    local repository, trust in that one directory whoever owns it)."""
    if is_local_remote(remote):
        path = unquote(urlparse(remote).path) if remote.startswith("file://") else remote
        return ("-c", "protocol.file.allow=always", "-c", f"safe.directory={Path(path).absolute()}")
    scheme = remote.split("://", 1)[0].lower() if "://" in remote else "ssh"
    if scheme not in ("https", "http"):
        raise WorkspaceError(f"unsupported remote protocol {scheme!r}: use https (or a local path)")
    return ("-c", f"protocol.{scheme}.allow=always")


def git_env(home: Path, ceiling: Path, auth_header: str | None = None) -> dict[str, str]:
    """The whole environment of one host git process (see the module docstring)."""
    env = {k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_ATTR_NOSYSTEM="1",
        GIT_CEILING_DIRECTORIES=str(ceiling),
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_TERMINAL_PROMPT="0",
        GCM_INTERACTIVE="never",
        LC_ALL="C",
    )
    if auth_header:
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraheader", GIT_CONFIG_VALUE_0=auth_header)
    return env


def redact_url(text: str) -> str:
    """Hide ``user:password@`` in any URL inside ``text``."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


def secret_forms(header: str | None) -> list[str]:
    """The header, its value, its token and the token inside a basic credential (longest first)."""
    if not header:
        return []
    forms = {header, header.partition(":")[2].strip()}
    token = header.split()[-1]
    forms.add(token)
    try:
        decoded = base64.b64decode(token, validate=True).decode()
        forms.update({decoded, decoded.partition(":")[2]})
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        pass
    return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


async def run_git(
    args: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    stdin: bytes | Path | None = None,
) -> GitOut:
    """Run ``git <SAFE_CONFIG> <args>`` (no shell) under a timeout; kill its process group on expiry.

    ``env`` is the complete environment (build it with :func:`git_env`); nothing is inherited.
    ``stdin`` is bytes to send, or a file to read standard input from.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(stdin, Path):
            source: int | IO[bytes] = stack.enter_context(stdin.open("rb"))
            data = None
        else:
            source = asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE
            data = stdin
        try:
            proc = await asyncio.create_subprocess_exec(
                "git",
                *SAFE_CONFIG,
                *args,
                cwd=cwd,
                env=env,
                stdin=source,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # own process group, so helpers die with git on timeout
            )
        except FileNotFoundError as exc:
            raise WorkspaceError("git is not installed on the worker") from exc
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(data), timeout_s)
        except TimeoutError:
            raise WorkspaceError(f"git {verb(args)} timed out after {timeout_s:g}s") from None
        finally:
            if proc.returncode is None:  # timed out or cancelled
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    rc = proc.returncode if proc.returncode is not None else -1
    return GitOut(rc, stdout, stderr.decode("utf-8", "replace"))


def verb(args: Sequence[str]) -> str:
    """The git subcommand in ``args`` (skipping ``--git-dir X`` and ``-c k=v`` options)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-c", "--git-dir", "--work-tree", "-C"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return "command"


def inside_repository(path: Path) -> Path | None:
    """The nearest directory at or above ``path`` holding a ``.git`` entry, or ``None``.

    Checked with ``lstat`` only: nothing is read, resolved or executed.
    """
    current = path.absolute()
    for candidate in (current, *current.parents):
        with contextlib.suppress(OSError):
            os.lstat(candidate / ".git")
            return candidate
    return None
