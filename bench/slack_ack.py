"""Slack acknowledgement: task-starting slash commands, 50 at once, beside a bare Bolt app that only acks.

One server process serves both, on one uvicorn, on loopback:

* ``bare Bolt`` — a slack-bolt ``AsyncApp`` whose ``/handoff`` listener only calls ``ack()``
  (``process_before_response=True``, the FastAPI/Starlette adapter, signature checked): the floor
  for a Slack app in Python, and the reference of every ratio printed;
* ``/handoff <task>`` — Handoff's ``/slack/events``: the signature, the request read and screened,
  one ``Delivery`` row (holding the request) committed and the ``slack_ingest`` job queued, then
  the acknowledgement. Every command is durably recorded before its ack: the run checks that each
  one has its row.

The load generator is lean so that it is not the floor: 50 keep-alive connections, each a raw
asyncio socket writing pre-built, pre-signed requests and reading the answer by its
``Content-Length``. Each round fires one request on every connection at once; rounds alternate
between the two endpoints so drift hits both alike. Throughput is requests per second of burst
time (the 50 requests of a round, from the first write to the last answer).

A worker process (``slack_ingest`` plus the outbox sender; runs are not executed) turns the
commands into tasks, and the fake Slack records when each task's status message is posted: the
time from a command's ack to its status message is the person's wait for the thread. Each of
those commands names its repository and comes from its own channel (Slack paces posts per
channel, about one a second), and the bursts come ``--status-gap`` seconds apart.

Targets: p99 ≤ 2.5 x the bare Bolt ack's p99, throughput ≥ 0.4 x of it, the status message within
1 s (p50) of the ack. The sanity check: the bare Bolt ack's p99 ≤ 20 ms (else the machine, or the
client, is the floor).

Run with services up (``source scripts/services.sh``): ``uv run python bench/slack_ack.py``.
PostgreSQL is used when ``HANDOFF_TEST_POSTGRES_URL`` is set (a throwaway database), else SQLite.
Nothing leaves loopback: the Slack Web API is the local fake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import httpx
import yaml
from starlette.requests import Request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, free_port, pct
from core.settings import load_settings
from tests.fakes.slack_api import APP_ID, BOT_TOKEN, SIGNING_SECRET, TEAM, FakeSlack, sign

USER = "U0BENCH"
REPO = "acme/bench"
BOLT_PATH = "/bench/bolt"


@contextlib.contextmanager
def database(work: Path) -> Iterator[str]:
    """A throwaway PostgreSQL database if one is available, else SQLite; yields its URL."""
    pg = os.environ.get("HANDOFF_TEST_POSTGRES_URL")
    if not pg:
        yield f"sqlite:///{work / 'bench.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(pg)
    name = f"handoff_bench_{uuid.uuid4().hex[:8]}"

    def admin() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname="postgres",
            autocommit=True,
        )

    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def write_config(work: Path) -> Path:
    """handoff.yml: one user allowed on one repository; an outbox as fast as Slack allows."""
    config = work / "handoff.yml"
    slack = {"allow": [{"repos": [REPO], "users": [USER]}]}
    config.write_text(yaml.safe_dump({"slack": slack, "outbox": {"poll_s": 0.05}}))
    return config


# -- the server and worker processes ---------------------------------------------------------------


def serve(port: int) -> None:
    """The server process: Handoff's app from the environment's settings, plus the bare Bolt app."""
    import uvicorn
    from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncAck, AsyncApp

    from bot.client import make_client
    from web.app import create_app
    from web.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    app = create_app(settings)
    bolt = AsyncApp(
        client=make_client(settings),
        signing_secret=SIGNING_SECRET,
        process_before_response=True,
        name="bare",
    )

    @bolt.command("/handoff")
    async def only_ack(ack: AsyncAck) -> None:
        await ack()

    handler = AsyncSlackRequestHandler(bolt)

    @app.post(BOLT_PATH)
    async def bare_bolt(request: Request) -> Any:
        return await handler.handle(request)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def work() -> None:
    """The worker process: ``slack_ingest`` and the outbox sender; runs are recorded, not executed."""
    from arq.worker import func

    from bot.ingress import INGEST_JOB
    from bot.integration import SlackIntegration
    from jobs.intake import retry_on_outage
    from jobs.queue import RUN_JOB
    from jobs.worker import create_worker
    from web.integrations import worker_services

    async def not_run(ctx: dict[str, Any], *args: Any) -> str:
        return "not run in this benchmark"

    settings = load_settings()
    wc = worker_services(settings)
    slack = next(i for i in wc.integrations if isinstance(i, SlackIntegration))
    functions = [
        func(retry_on_outage(slack.jobs[INGEST_JOB]), name=INGEST_JOB),
        func(not_run, name=RUN_JOB),
    ]
    create_worker(settings, wc, functions=functions, cron_jobs=[]).run()


@contextlib.asynccontextmanager
async def process(role: str, env: dict[str, str], port: int = 0) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Run :func:`serve` or :func:`work` in its own process."""
    argv = [sys.executable, __file__, f"--{role}", str(port)]
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(20)


async def until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the server answers."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/livez")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.1)


# -- the lean client --------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection written and read by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        """Connect."""
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes, float]:
        """Write ``request``; the status, the body and the seconds until the whole answer was read."""
        start = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return int(head.split(b" ", 2)[1]), body, time.perf_counter() - start

    async def close(self) -> None:
        """Close."""
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def slash_request(host: str, path: str, text: str, channel: str, trigger: str) -> bytes:
    """A signed ``/handoff`` slash command, as bytes on the wire (Slack's form fields)."""
    body = urlencode(
        {
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "team_id": TEAM,
            "team_domain": "bench",
            "channel_id": channel,
            "channel_name": "bench",
            "user_id": USER,
            "user_name": "bench",
            "command": "/handoff",
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": "https://hooks.slack.com/commands/T0/1/x",
            "trigger_id": trigger,
        }
    ).encode()
    headers = {
        "Host": host,
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(body)),
        **sign(body),
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body


@dataclass
class Burst:
    """One round: each request's latency, and the burst's wall time."""

    latencies: list[float]
    wall_s: float
    acked_at: dict[str, float]


async def burst(conns: list[Connection], requests: list[tuple[str, bytes]], check: Any) -> Burst:
    """Send one request on every connection at once."""
    acked: dict[str, float] = {}

    async def one(conn: Connection, trigger: str, request: bytes) -> float:
        status, body, seconds = await conn.send(request)
        acked[trigger] = time.monotonic()
        check(status, body)
        return seconds

    start = time.perf_counter()
    latencies = await asyncio.gather(*(one(c, t, r) for c, (t, r) in zip(conns, requests, strict=True)))
    return Burst(list(latencies), time.perf_counter() - start, acked)


# -- the run --------------------------------------------------------------------------------------


def stats(bursts: list[Burst]) -> dict[str, float]:
    """p50/p99 (ms) and throughput (requests per second of burst time)."""
    samples = [s for b in bursts for s in b.latencies]
    ms = [s * 1000 for s in samples]
    return {
        "n": len(samples),
        "p50": pct(ms, 0.5),
        "p99": pct(ms, 0.99),
        "max": max(ms),
        "rps": len(samples) / sum(b.wall_s for b in bursts),
    }


async def main(rounds: int, concurrency: int, status_rounds: int, status_gap: float) -> int:
    redis_url = os.environ.get("HANDOFF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    scratch = Path(tempfile.mkdtemp(prefix="handoff-bench-slack-"))
    fake = FakeSlack()
    with database(scratch) as db_url:
        async with Server(fake.app) as fake_server:
            fake.bind(fake_server.url)
            env = {
                "DATABASE_URL": db_url,
                "REDIS_URL": redis_url,
                "HANDOFF_CONFIG": str(write_config(scratch)),
                "HANDOFF_WORKSPACE_DIR": str(scratch / "ws"),
                "HANDOFF_QUEUE_NAME": f"handoff:bench:{os.getpid()}",
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": fake.api_url,
                "HANDOFF_LOG_LEVEL": "WARNING",
            }
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            async with process("serve", env, port) as server:
                await until_up(url, server)
                result = await measure(url, rounds, concurrency, status_rounds, status_gap, fake, db_url, env)
    return result


async def measure(
    url: str,
    rounds: int,
    concurrency: int,
    status_rounds: int,
    status_gap: float,
    fake: FakeSlack,
    db_url: str,
    env: dict[str, str],
) -> int:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    conns = [await Connection.open(host, port) for _ in range(concurrency)]
    n = 0

    def build(path: str, text: str, channel: str) -> tuple[str, bytes]:
        nonlocal n
        n += 1
        trigger = f"{n}.{int(time.time())}.{uuid.uuid4().hex[:16]}"
        return trigger, slash_request(f"{host}:{port}", path, text, channel, trigger)

    def ok(status: int, body: bytes) -> None:
        assert status == 200, (status, body[:200])

    def acked(status: int, body: bytes) -> None:
        ok(status, body)
        assert b"status follows" in body, body[:200]

    bolt: list[Burst] = []
    handoff: list[Burst] = []
    triggers: list[str] = []
    # Warm up both (connections, Bolt's one auth.test, the database pool), then alternate.
    # Each Handoff command comes from a channel of its own: Slack paces status messages per
    # channel (about one a second), and the worker works this backlog off before the status phase.
    for _ in range(2):
        await burst(conns, [build(BOLT_PATH, "warm up", "C0WARM") for _ in conns], ok)
        await burst(conns, [build("/slack/events", f"{REPO} warm up", f"C0W{n:05d}") for _ in conns], acked)
    for _ in range(rounds):
        bolt.append(await burst(conns, [build(BOLT_PATH, "echo bench", "C0BENCH") for _ in conns], ok))
        requests = [build("/slack/events", f"{REPO} echo bench {n}", f"C0B{n:05d}") for _ in conns]
        triggers += [t for t, _ in requests]
        handoff.append(await burst(conns, requests, acked))
    # Every command is recorded before its ack, whether or not a worker ever takes it.
    recorded = await recorded_count(db_url, triggers)
    # The person's wait for the thread, with a worker: first it works off the backlog of the ack
    # rounds (no worker ran then, so none took CPU from the server), then bursts a little apart,
    # each command in its own channel.
    waits: list[Burst] = []
    for conn in conns:
        await conn.close()
    async with process("work", env):
        await backlog_done(db_url)
        conns = [await Connection.open(host, port) for _ in range(concurrency)]  # idle ones were closed
        for r in range(status_rounds):
            await asyncio.sleep(status_gap)
            requests = [
                build("/slack/events", f"{REPO} echo status {i}", f"C{r:03d}{i:03d}")
                for i in range(concurrency)
            ]
            waits.append(await burst(conns, requests, acked))
        status_delays = await status_waits(waits, fake, db_url)
    for conn in conns:
        await conn.close()
    return report(bolt, handoff, status_delays, recorded, len(triggers), db_url, concurrency)


async def status_waits(
    waits: list[Burst], fake: FakeSlack, db_url: str, timeout: float = 60.0
) -> list[float]:
    """Seconds from each command's ack to its task's status message (once all are posted)."""
    from sqlalchemy import select
    from sqlmodel import col

    from core.db import make_engine, make_sessions
    from core.models import Delivery

    acked = {t: at for b in waits for t, at in b.acked_at.items()}
    engine = make_engine(db_url)
    sessions = make_sessions(engine)
    deadline = time.monotonic() + timeout
    delays: list[float] = []
    try:
        while time.monotonic() < deadline:
            async with sessions() as session:
                rows = (
                    await session.execute(
                        select(Delivery).where(col(Delivery.id).in_([f"cmd:{t}" for t in acked]))
                    )
                ).scalars()
                task_of = {r.id[4:]: r.task_id for r in rows if r.task_id}
            posted = {
                tid: call.at
                for call in fake.of("chat.postMessage")
                for tid in task_of.values()
                if tid in str(call.args.get("blocks", ""))
            }
            if len(posted) == len(acked):
                delays = [posted[task_of[t]] - at for t, at in acked.items()]
                break
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
    return delays


async def backlog_done(db_url: str, timeout: float = 300.0) -> None:
    """Until the worker has handled every recorded request and sent every message."""
    from sqlalchemy import func, select
    from sqlmodel import col

    from core.db import make_engine, make_sessions
    from core.models import Delivery, Outbox

    engine = make_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            async with make_sessions(engine)() as session:
                query = select(func.count()).select_from(Delivery).where(col(Delivery.outcome) == "received")
                pending = select(func.count()).select_from(Outbox).where(col(Outbox.state) == "pending")
                if (
                    int((await session.execute(query)).scalar_one())
                    + int((await session.execute(pending)).scalar_one())
                    == 0
                ):
                    return
            await asyncio.sleep(0.5)
        raise RuntimeError("the worker did not work off the backlog in time")
    finally:
        await engine.dispose()


async def recorded_count(db_url: str, triggers: list[str]) -> int:
    """How many of the task commands have their ``Delivery`` row."""
    from sqlalchemy import func, select
    from sqlmodel import col

    from core.db import make_engine, make_sessions
    from core.models import Delivery

    engine = make_engine(db_url)
    try:
        async with make_sessions(engine)() as session:
            ids = [f"cmd:{t}" for t in triggers]
            count = 0
            for start in range(0, len(ids), 500):
                query = (
                    select(func.count())
                    .select_from(Delivery)
                    .where(col(Delivery.id).in_(ids[start : start + 500]))
                )
                count += int((await session.execute(query)).scalar_one())
            return count
    finally:
        await engine.dispose()


def report(
    bolt: list[Burst],
    handoff: list[Burst],
    status_delays: list[float],
    recorded: int,
    sent: int,
    db_url: str,
    concurrency: int,
) -> int:
    b, h = stats(bolt), stats(handoff)
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    print(
        f"Slack ack: {len(handoff)} bursts x {concurrency} concurrent signed slash commands per endpoint, "
        f"{backend}, loopback, raw-socket keep-alive client"
    )
    print(
        f"(server and worker in their own processes; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
    )
    print(f"{'endpoint':26} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>8}")
    for name, s in (("bare Bolt (only ack)", b), ("Handoff /handoff <task>", h)):
        print(f"{name:26} {s['n']:5.0f} {s['p50']:8.1f} {s['p99']:8.1f} {s['max']:8.1f} {s['rps']:8.0f}")
    p99_ratio, rps_ratio = h["p99"] / b["p99"], h["rps"] / b["rps"]
    sane = b["p99"] <= 20.0
    print(f"sanity: bare Bolt p99 {b['p99']:.1f} ms ({'≤' if sane else '>'} 20 ms)")
    print(f"p99 ratio {p99_ratio:.2f}x (target ≤ 2.5x); throughput ratio {rps_ratio:.2f}x (target ≥ 0.4x)")
    print(
        f"recorded before the ack: {recorded} of {sent} task commands (rows checked with no worker running)"
    )
    ok = p99_ratio <= 2.5 and rps_ratio >= 0.4 and recorded == sent
    if status_delays:
        ms = [d * 1000 for d in status_delays]
        print(
            f"ack → status message in the thread: p50 {pct(ms, 0.5):.0f} ms, p99 {pct(ms, 0.99):.0f} ms "
            f"over {len(ms)} commands (target p50 ≤ 1000 ms)"
        )
        ok = ok and pct(ms, 0.5) <= 1000
    else:
        print("ack → status message: not every status message was posted within 60 s")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="bursts per endpoint (at most 50)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--status-rounds", type=int, default=4, help="bursts timed to their status message")
    parser.add_argument("--status-gap", type=float, default=2.0, help="seconds between those bursts")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=int, metavar="_", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    elif args.work is not None:
        work()
    else:
        sys.exit(
            asyncio.run(
                main(min(args.rounds, 50), min(args.concurrency, 200), args.status_rounds, args.status_gap)
            )
        )
