"""What a hostile agent would try from inside a sandbox (run there with python3; stdlib only).

It reads ``probe.json`` beside it: ``needles`` (base64 of each host secret, reversed, so that the
decoded values exist only in this process's memory, never in a file or a command line it scans),
``connect`` (``[host, port]`` pairs to try directly) and ``proxied`` (raw requests to send to the
egress proxy named by ``HTTPS_PROXY``). It prints one line per finding:

* ``PROBE found <name> in <where>`` for a secret seen in its environment, a process's environ or
  command line, or any readable file (every regular file under ``/`` but ``/proc`` and ``/sys``,
  read whole in overlapping chunks);
* ``PROBE connect <host>:<port> -> <result>`` and ``PROBE proxy <request line> -> <status line>``;
* ``PROBE scanned files=<n> bytes=<n>`` at the end of the scan.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

CHUNK = 1 << 20


def needles(spec: dict[str, str]) -> dict[str, bytes]:
    return {name: base64.b64decode(value)[::-1] for name, value in spec.items()}


def scan_bytes(data: bytes, where: str, secrets: dict[str, bytes], found: set[tuple[str, str]]) -> None:
    for name, secret in secrets.items():
        if secret in data:
            found.add((name, where))


def scan_file(path: str, secrets: dict[str, bytes], found: set[tuple[str, str]]) -> int:
    overlap = max(len(s) for s in secrets.values())
    total, tail = 0, b""
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    return total
                total += len(chunk)
                scan_bytes(tail + chunk, path, secrets, found)
                tail = chunk[-overlap:]
    except OSError:
        return total


def scan(secrets: dict[str, bytes]) -> None:
    found: set[tuple[str, str]] = set()
    scan_bytes("\n".join(f"{k}={v}" for k, v in os.environ.items()).encode(), "environment", secrets, found)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for name in ("environ", "cmdline", "mountinfo", "status"):
                scan_file(f"/proc/{pid}/{name}", secrets, found)
    files = size = 0
    for root, dirs, names in os.walk("/", topdown=True, followlinks=False):
        if root == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
        for name in names:
            path = os.path.join(root, name)
            try:
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
            except OSError:
                continue
            files += 1
            size += scan_file(path, secrets, found)
    for name, where in sorted(found):
        print(f"PROBE found {name} in {where}", flush=True)
    print(f"PROBE scanned files={files} bytes={size}", flush=True)


def try_connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return "connected: " + s.recv(200).decode("latin-1").splitlines()[0]
    except OSError as exc:
        return f"refused: {exc}"


def try_proxy(request: str) -> str:
    proxy = urlsplit(os.environ.get("HTTPS_PROXY", ""))
    if not proxy.hostname:
        return "no proxy configured"
    try:
        with socket.create_connection((proxy.hostname, proxy.port or 80), timeout=10) as s:
            s.sendall(request.encode() + b"\r\n\r\n")
            answer = s.recv(4096).decode("latin-1")
    except OSError as exc:
        return f"error: {exc}"
    return answer.splitlines()[0] if answer else "closed without an answer"


def main() -> None:
    spec = json.loads((Path(sys.argv[0]).parent / "probe.json").read_text())
    if spec.get("needles"):
        scan(needles(spec["needles"]))
    for host, port in spec.get("connect", []):
        print(f"PROBE connect {host}:{port} -> {try_connect(host, port)}", flush=True)
    for request in spec.get("proxied", []):
        print(f"PROBE proxy {request.splitlines()[0]} -> {try_proxy(request)}", flush=True)


if __name__ == "__main__":
    main()
