"""GitHub webhook ingest throughput: signed 5 KB deliveries, 50 connections, loopback.

Two endpoints on the same single-worker uvicorn server (a subprocess), measured in the same run:

* ``/bare`` — a FastAPI route that only answers 202: the floor (HTTP, uvicorn, client);
* ``/github/webhooks`` — the real route: size cap, HMAC-SHA256 check, headers, JSON, the
  request-time screen, the durable ``Delivery`` row (PostgreSQL, ``ON CONFLICT DO NOTHING``) and
  the arq enqueue of the ``github_ingest`` job — everything GitHub waits for (concurrent
  deliveries share one INSERT and one Redis pipeline per burst: group commit).

Each delivery has a fresh GUID (so every one is inserted and enqueued) and a routed body: a
``/handoff`` issue comment padded to 5 KB. Target: ≥ 1,500 deliveries/s and p99 < 50 ms; the
ratio to the bare endpoint is printed. Bounded: ``--seconds`` per endpoint (default 8), then stop.

Run with services up: ``source scripts/services.sh && uv run python bench/ingest.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, summary
from github_app.signature import sign

SECRET = "bench-secret"
CONNECTIONS = 50


def payload() -> bytes:
    """A routed ``issue_comment.created`` body of about 5 KB."""
    data = {
        "action": "created",
        "issue": {
            "number": 1,
            "title": "Bench",
            "body": "",
            "html_url": "https://github.com/acme/w/issues/1",
        },
        "comment": {
            "id": 1,
            "body": "/handoff fix the flaky test",
            "user": {"login": "alice", "type": "User"},
        },
        "repository": {"id": 1, "name": "w", "full_name": "acme/w", "default_branch": "main"},
        "installation": {"id": 77},
        "sender": {"login": "alice", "type": "User"},
    }
    body = json.dumps(data)
    data["padding"] = "x" * (5 * 1024 - len(body) - 20)
    return json.dumps(data).encode()


# -- the server (child process) -------------------------------------------------------------------


def serve(port: int) -> None:
    """Run Handoff's app plus ``/bare`` on one uvicorn worker (called in the child)."""
    import uvicorn
    from fastapi.responses import JSONResponse

    from core.settings import load_settings
    from web.app import create_app

    app = create_app(load_settings())

    async def bare() -> JSONResponse:
        return JSONResponse({"detail": "ok"}, status_code=202)

    app.add_api_route("/bare", bare, methods=["POST"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, workers=1)


# -- the load (parent) ------------------------------------------------------------------------------


async def _connection(
    port: int,
    path: str,
    body: bytes,
    signature: str,
    deadline: float,
    latencies: list[float],
    codes: dict[int, int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-GitHub-Event: issue_comment\r\nX-Hub-Signature-256: {signature}\r\n"
    )
    try:
        while time.perf_counter() < deadline:
            request = f"{head}X-GitHub-Delivery: {uuid.uuid4()}\r\n\r\n".encode() + body
            start = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            code = int(status_line.split()[1])
            codes[code] = codes.get(code, 0) + 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def load(port: int, path: str, seconds: float) -> tuple[float, list[float], dict[int, int]]:
    """``CONNECTIONS`` keep-alive connections posting for ``seconds``; return (rate, latencies, codes)."""
    body = payload()
    signature = sign(SECRET, body)
    latencies: list[float] = []
    codes: dict[int, int] = {}
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(
        *(_connection(port, path, body, signature, deadline, latencies, codes) for _ in range(CONNECTIONS))
    )
    return len(latencies) / (time.perf_counter() - start), latencies, codes


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh migrated PostgreSQL database (or SQLite when no PostgreSQL is configured)."""
    from sqlalchemy.engine import make_url

    from web.migrate import upgrade

    pg = os.environ.get("HANDOFF_TEST_POSTGRES_URL")
    if not pg:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='handoff-bench-')}/bench.db"
        upgrade(url)
        yield url
        return
    import psycopg

    base = make_url(pg)
    name = f"handoff_bench_{uuid.uuid4().hex[:8]}"
    admin: dict[str, Any] = {
        "host": base.host,
        "port": base.port,
        "user": base.username,
        "password": base.password,
    }
    with psycopg.connect(**admin, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(**admin, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


async def _clear_queue(redis_url: str, queue: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(  # type: ignore[no-untyped-call]
        redis_url
    )
    try:
        keys = [k async for k in client.scan_iter(match=f"arq:job:{queue}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
        await client.delete(queue)
    finally:
        await client.aclose()


async def main(seconds: float) -> None:
    """Start the server, measure both endpoints (alternating halves), print the comparison."""
    redis_url = os.environ.get("HANDOFF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    queue = f"handoff:bench:{uuid.uuid4().hex[:8]}"
    port = free_port()
    with database() as db_url, tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "HANDOFF_QUEUE_NAME": queue,
            "GITHUB_APP_ID": "4242",
            "GITHUB_PRIVATE_KEY": _key(),
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_API_URL": "http://127.0.0.1:9",  # never called by the webhook route
            "HANDOFF_WORKSPACE_DIR": tmp,
        }
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env, cwd=tmp)
        try:
            for _ in range(300):
                try:
                    _r, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            await load(port, "/github/webhooks", 1.0)  # warm up pools and caches
            await load(port, "/bare", 1.0)
            results: dict[str, tuple[list[float], list[float], dict[int, int]]] = {
                "/bare": ([], [], {}),
                "/github/webhooks": ([], [], {}),
            }
            for _half in range(2):  # alternate, so drift hits both alike
                for path in results:
                    rate, latencies, codes = await load(port, path, seconds / 2)
                    results[path][0].append(rate)
                    results[path][1].extend(latencies)
                    for code, n in codes.items():
                        results[path][2][code] = results[path][2].get(code, 0) + n
        finally:
            child.terminate()
            child.wait(10)
            await _clear_queue(redis_url, queue)
    print(f"{CONNECTIONS} connections, 5 KB signed bodies, {seconds:g} s per endpoint, one uvicorn worker")
    rates = {}
    for path, (rate_list, latencies, codes) in results.items():
        rates[path] = sum(rate_list) / len(rate_list)
        s = summary(latencies)
        print(
            f"  {path:18} {rates[path]:8.0f} req/s   p50 {s['p50']:6.1f} ms   p95 {s['p95']:6.1f} ms   "
            f"p99 {s['p99']:6.1f} ms   max {max(latencies) * 1000:6.1f} ms   "
            f"statuses {dict(sorted(codes.items()))}"
        )
    ratio = rates["/github/webhooks"] / rates["/bare"]
    print(f"  webhook / bare throughput ratio: {ratio:.2f}")
    webhook_p99 = summary(results["/github/webhooks"][1])["p99"]
    ok = rates["/github/webhooks"] >= 1500 and webhook_p99 < 50
    print(f"  target (>= 1,500 deliveries/s and p99 < 50 ms): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per endpoint")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    else:
        asyncio.run(main(args.seconds))
