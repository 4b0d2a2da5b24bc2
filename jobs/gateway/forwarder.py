"""The in-container forwarder (``forward.c``): compiled once, statically, and mounted read-only.

One static binary serves every image — busybox, Debian, Node.js — so no image needs an
interpreter or a rebuild to reach the gateway: the sandbox bind-mounts it at
:data:`CONTAINER_PATH` and wraps the agent's command with :func:`wrap_command`. It is compiled on
the worker's machine the first time a run needs it (``cc -static``: Debian's ``gcc`` and
``libc6-dev``), into a file named by the hash of its source, so a changed source is rebuilt and an
unchanged one never is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from core.errors import SandboxError

SOURCE = Path(__file__).with_name("forward.c")
CONTAINER_PATH = "/handoff/bin/handoff-forward"


def source_digest() -> str:
    """Short content hash of the forwarder's source (names the compiled binary)."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]


def forwarder_binary(cache_dir: Path) -> Path:
    """The compiled forwarder in ``cache_dir``, building it first when this source has no binary."""
    target = cache_dir / f"handoff-forward-{source_digest()}"
    if target.is_file():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SandboxError(
            "the sandbox's network forwarder needs a C compiler once (apt-get install gcc libc6-dev)"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".handoff-forward-", dir=cache_dir)
    os.close(fd)
    cmd = [compiler, "-static", "-O2", "-s", "-pthread", "-o", tmp, str(SOURCE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise SandboxError(f"building the sandbox forwarder failed: {proc.stderr.strip()[-1500:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: concurrent workers never see a half-written binary
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def wrap_command(listeners: dict[int, str], command: list[str]) -> list[str]:
    """``command`` run behind the forwarder: each loopback ``port`` relays to its socket path."""
    args = [CONTAINER_PATH]
    for port, path in sorted(listeners.items()):
        args += ["-l", f"127.0.0.1:{port}={path}"]
    return [*args, "--", *command]
