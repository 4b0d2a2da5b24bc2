"""A large repository generated once with ``git fast-import`` and served over git's smart HTTP.

:func:`generate` writes a bare repository of realistic size — by default 50,000 commits over
20,000 files in 200 directories, each commit rewriting a few files with fresh content (so history
grows the way a busy project's does, ~300 MB packed) — and caches it by its parameters.
:class:`SmartHTTP` serves a directory of repositories with ``git http-backend`` on loopback,
exactly as a network remote speaks to git (protocol v2, packs streamed over HTTP).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("HANDOFF_BENCH_CACHE", "/var/cache/handoff/bench"))


def generate(commits: int = 50_000, files: int = 20_000, per_commit: int = 3, blob: int = 3_500) -> Path:
    """The cached repository for these parameters (built on first use; a few minutes)."""
    path = CACHE / f"large-{commits}c-{files}f-{per_commit}x{blob}.git"
    if (path / "refs" / "heads" / "main").exists() or (path / "packed-refs").exists():
        return path
    tmp = path.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp)], check=True)
    rng = random.Random(42)
    names = [f"pkg{i % 200:03d}/module_{i:05d}.py" for i in range(files)]

    def content(i: int) -> bytes:
        # Hex noise: deltas cannot shrink it and zlib halves it, as real churn behaves in bulk.
        head = f"# module {i}\n".encode()
        return head + rng.randbytes(blob // 2).hex().encode() + b"\n"

    proc = subprocess.Popen(
        ["git", "--git-dir", str(tmp), "fast-import", "--quiet", "--depth=10"], stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    out = proc.stdin
    stamp = 1_700_000_000
    for n in range(commits):
        message = f"change {n}\n".encode()
        out.write(b"commit refs/heads/main\n")
        out.write(b"committer Bench <bench@example.com> %d +0000\n" % (stamp + n * 60))
        out.write(b"data %d\n%s\n" % (len(message), message))
        touched = range(files) if n == 0 else rng.sample(range(files), per_commit)
        for i in touched:
            data = content(i)
            out.write(b"M 100644 inline %s\ndata %d\n%s\n" % (names[i].encode(), len(data), data))
    out.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    subprocess.run(["git", "--git-dir", str(tmp), "repack", "-a", "-d", "-q", "--depth=10"], check=True)
    os.rename(tmp, path)
    return path


def pack_bytes(repo: Path) -> int:
    """Bytes of the repository's packs."""
    return sum(p.stat().st_size for p in (repo / "objects" / "pack").glob("*.pack"))


class _Backend(BaseHTTPRequestHandler):
    """One smart-HTTP request, answered by ``git http-backend`` as a CGI program."""

    server: _Server

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._chunked()
        env["CONTENT_LENGTH"] = str(len(body))
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    root: Path


class SmartHTTP:
    """``git http-backend`` serving every repository under ``root`` at ``http://127.0.0.1:<port>/``."""

    def __init__(self, root: Path) -> None:
        self.server = _Server(("127.0.0.1", 0), _Backend)
        self.server.root = root
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SmartHTTP:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
