"""One command in a running sandbox container: ``docker exec`` with stdin, exit code and timeout.

The SDK's ``exec_run(stream=True)`` gives no exit code and cannot feed stdin, so this speaks the
exec API directly: ``exec_create``, ``exec_start`` on the hijacked socket (stdin written, then the
write half closed; output read as Docker's multiplexed frames, stdout and stderr apart), and
``exec_inspect`` for the exit code. It blocks, so callers run it in a thread.

The per-call timeout has to kill more than the exec'd process: the output stream stays open as long
as *any* process holds the pipe (``sh -c 'sleep 999 | cat'``). Every exec carries a unique
``HANDOFF_EXEC`` marker in its environment, which its children inherit; at the deadline a second
exec kills every process whose ``/proc/<pid>/environ`` holds that marker (same uid, so readable;
only ``sh``, ``tr`` and ``grep`` are needed, which busybox and Debian both have). Should the stream
still not end, the socket is closed and the call reports ``timed_out`` anyway.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from core.ports import ExecResult

#: Output kept per stream: the first and the last half of this many bytes.
MAX_OUTPUT = 2 * 1024 * 1024
#: After the kill, how long the stream may take to end before the socket is closed by force.
_KILL_GRACE_S = 5.0
_MARK = "HANDOFF_EXEC"
# Three rounds, because a process may fork between the scan and the kill.
_KILL_SCRIPT = (
    "for round in 1 2 3; do found=; "
    "for p in /proc/[0-9]*; do "
    'if tr "\\000" "\\n" < "$p/environ" 2>/dev/null | grep -qx "HANDOFF_EXEC=$1"; then '
    'kill -9 "${p#/proc/}" 2>/dev/null; found=1; fi; done; '
    '[ -z "$found" ] && break; done; exit 0'
)


class CappedBuffer:
    """Keeps the head and the tail of a byte stream, up to ``cap`` bytes in all."""

    def __init__(self, cap: int = MAX_OUTPUT) -> None:
        self._half = cap // 2
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        """Append ``data``."""
        self.total += len(data)
        room = self._half - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > 2 * self._half:  # trim rarely, not on every chunk
                del self._tail[: len(self._tail) - self._half]

    @property
    def truncated(self) -> bool:
        """True when bytes between the head and the tail were dropped."""
        return self.total > len(self._head) + min(len(self._tail), self._half)

    def value(self) -> bytes:
        """The bytes kept (head, a marker when the middle was dropped, tail)."""
        tail = bytes(self._tail[-self._half :]) if self._half else b""
        if not self.truncated:
            return bytes(self._head) + bytes(self._tail)
        dropped = self.total - len(self._head) - len(tail)
        return bytes(self._head) + f"\n[... {dropped} bytes cut ...]\n".encode() + tail


def run_exec(
    api: Any,
    container_id: str,
    argv: list[str],
    *,
    user: str,
    timeout_s: float,
    stdin: bytes | None = None,
    workdir: str = "/workspace",
    env: Mapping[str, str] | None = None,
    max_output: int = MAX_OUTPUT,
) -> ExecResult:
    """Run ``argv`` in ``container_id`` and wait for it (blocking); see the module docstring.

    ``api`` is the SDK's low-level ``APIClient``; its errors (``docker.errors.APIError`` when the
    container is gone or stopped) propagate to the caller.
    """
    marker = uuid.uuid4().hex
    started = time.monotonic()
    exec_id = api.exec_create(
        container_id,
        argv,
        stdin=stdin is not None,
        stdout=True,
        stderr=True,
        environment={**(env or {}), _MARK: marker},
        workdir=workdir,
        user=user,
    )["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw: socket.socket = getattr(sock, "_sock", sock)
    out, err = CappedBuffer(max_output), CappedBuffer(max_output)
    timed_out = False
    try:
        if stdin is not None:
            _feed(raw, stdin)
        ended = _read_frames(raw, out, err, started + timeout_s)
        if not ended:
            timed_out = True
            _kill_marked(api, container_id, user, marker)
            if not _read_frames(raw, out, err, time.monotonic() + _KILL_GRACE_S):
                # Something outlived the kill (it changed its environment): stop listening.
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_RDWR)
    finally:
        with contextlib.suppress(Exception):
            sock.close()
    exit_code = None if timed_out else _exit_code(api, exec_id)
    return ExecResult(
        exit_code=exit_code,
        stdout=out.value(),
        stderr=err.value(),
        timed_out=timed_out,
        truncated=out.truncated or err.truncated,
        duration_s=time.monotonic() - started,
    )


def _feed(raw: socket.socket, data: bytes) -> None:
    """Write stdin from a helper thread (so a command that talks before it reads cannot deadlock
    against us), then close the write half: that is the command's end of input."""

    def write() -> None:
        with contextlib.suppress(OSError):
            raw.sendall(data)
            raw.shutdown(socket.SHUT_WR)

    if len(data) <= 65536:
        write()  # fits the socket buffers: no thread needed
    else:
        threading.Thread(target=write, name="handoff-exec-stdin", daemon=True).start()


def _read_frames(raw: socket.socket, out: CappedBuffer, err: CappedBuffer, deadline: float) -> bool:
    """Read multiplexed frames until the stream ends (True) or ``deadline`` passes (False)."""
    pending = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            readable, _, _ = select.select([raw], [], [], min(remaining, 1.0))
        except (OSError, ValueError):  # closed under us
            return True
        if not readable:
            continue
        try:
            chunk = raw.recv(65536)
        except OSError:
            return True
        if not chunk:
            return True
        pending += chunk
        while len(pending) >= 8:
            stream, size = struct.unpack(">BxxxL", pending[:8])
            if len(pending) < 8 + size:
                break
            data, pending = pending[8 : 8 + size], pending[8 + size :]
            (err if stream == 2 else out).add(data)


def _kill_marked(api: Any, container_id: str, user: str, marker: str) -> None:
    """Kill every process of the container whose environment carries ``marker``."""
    with contextlib.suppress(Exception):  # the container may be gone: the caller reports timed_out
        kill_id = api.exec_create(
            container_id, ["sh", "-c", _KILL_SCRIPT, "handoff-kill", marker], user=user
        )["Id"]
        api.exec_start(kill_id)


def _exit_code(api: Any, exec_id: str) -> int | None:
    """The exit code; Docker may record it a moment after the output stream ends."""
    for _ in range(200):
        info = api.exec_inspect(exec_id)
        if not info.get("Running"):
            code = info.get("ExitCode")
            return int(code) if isinstance(code, int) else None
        time.sleep(0.01)
    return None
