"""Report economy: what a chatty run costs in GitHub and Slack writes, and how late its end lands.

One task, created the way GitHub creates it (a signed ``issues.labeled`` webhook → Handoff's API →
the ``github_ingest`` job on a real arq worker), in a repository whose Slack channel announces
GitHub tasks — so the one task has both a GitHub home (check run + tracking comment) and a Slack
home (status message + milestone replies). Its run then records ``--events`` events (default 1,000)
spread evenly over ``--seconds`` (default 60): the ``running`` transition, Handoff's own progress
steps, the agent's stdout (log lines, tool calls, messages, progress steps — 10 % of them), a
``result``, and last the ``succeeded`` transition. Events go through the worker's
:class:`~jobs.pump.EventPump` (``Journal.append_events`` in small transactions), so the real GitHub
and Slack reporters write outbox rows in the same transactions, and the real
:class:`~jobs.outbox.OutboxSender` (default ``OutboxConfig`` pacing) delivers them through the real
notifiers to the fake GitHub (``tests/fakes/github_api.py``) and fake Slack
(``tests/fakes/slack_api.py``) on loopback. No Docker: the run's events are scripted.

Measured, per channel and per remote object:

* writes — GitHub: check-run POST/PATCH, tracking-comment POST/PATCH, reactions and any other
  comment; Slack: ``chat.postMessage`` / ``chat.update`` of the status message, thread replies,
  reactions. Token minting and reads are listed apart and not counted as writes;
* the delay from the final event (the ``succeeded`` transition committed) to the channel's last
  write, and to the write that put each object in its final state (which is checked: a completed
  check run, a "Done" tracking comment, a "Succeeded" Slack status message).

Reference, in the same run: the naive cost, one write per event (``--events`` per channel), and
the outbox rows the reporters wrote (what would be sent without the sender's coalescing).
Target: ≤ 30 writes per channel, final state delivered within 2 s of the run ending.

Run with Redis up (``source scripts/services.sh``): ``uv run python bench/report_economy.py
[--seconds 60] [--events 1000] [--postgres]``. SQLite in a temp dir unless ``--postgres`` (then a
throwaway database on ``HANDOFF_TEST_POSTGRES_URL``); Redis from ``HANDOFF_TEST_REDIS_URL`` or
``REDIS_URL``. Prints JSON, then one verdict line per channel; exits 1 only if the final state was
not delivered or a fake refused a request (a target miss is reported, not an error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from arq import Worker
from arq.worker import func
from pydantic import SecretStr
from sqlalchemy import func as sql_func
from sqlalchemy import select, update
from sqlmodel import col

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, pct
from bot.delivery import CHANNEL_INTERVAL_S, MESSAGE_INTERVAL_S, UPDATE_INTERVAL_S
from core.clock import utcnow
from core.links import TaskLinks
from core.models import EventType, ExternalRef, Outbox, Run, RunEvent, Task
from core.settings import Settings, load_settings
from core.states import RunOutcome, TaskState
from github_app.api import marker
from github_app.ingest import INGEST_JOB
from github_app.integration import GitHubIntegration
from github_app.reporter import check_key, comment_key
from github_app.signature import sign
from jobs.outbox import OutboxSender
from jobs.pump import EventPump
from jobs.queue import RUN_JOB, redis_settings
from jobs.services import WorkerServices
from tests.fakes.github_api import FakeGitHub
from tests.fakes.slack_api import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.support.github import example, rsa_keys
from web.app import create_app
from web.integrations import worker_services
from web.migrate import upgrade

APP_ID = 4242
INSTALLATION = 77
REPO = "acme/widgets"
ISSUE = 1
SENDER = "alice"
CHANNEL = "C0BENCH"
SLACK_USER = "U0BENCH"
WEBHOOK_SECRET = "bench-webhook-secret"
WRITE_TARGET = 30
DELAY_TARGET_S = 2.0
SETTLE_TIMEOUT_S = 60.0
# Minting an installation token is a POST but writes to no object: listed apart, like the reads.
GITHUB_AUTH_OPS = frozenset({"apps/create-installation-access-token"})
SLACK_WRITES = frozenset(
    {"chat.postMessage", "chat.update", "chat.postEphemeral", "reactions.add", "conversations.join"}
)
STEPS = ["reading the code", "planning", "editing", "running the tests", "fixing a test", "tidying up"]
FILES = ["src/widgets/core.py", "src/widgets/api.py", "tests/test_core.py", "README.md"]


class TimedGitHub(FakeGitHub):
    """The fake GitHub, also noting when (monotonic clock) it answered each recorded request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.times: list[float] = []

    def _record(self, request: Any, path: str, op: str, body: Any, status: int) -> None:
        super()._record(request, path, op, body, status)
        self.times.append(time.monotonic())


@dataclass
class Write:
    """One write a fake received, attributed to a remote object."""

    obj: str
    action: str
    at: float
    ok: bool


@dataclass
class Phases:
    """Monotonic times of the run's milestones."""

    started: float = 0.0
    ended: float = 0.0
    run_id: str = ""
    events: Counter[str] = field(default_factory=Counter)


# -- set-up ------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(work: Path, postgres: bool) -> Iterator[str]:
    """SQLite in ``work``, or (``postgres``) a throwaway PostgreSQL database; yields its URL."""
    if not postgres:
        yield f"sqlite:///{work / 'bench.db'}"
        return
    if not os.environ.get("HANDOFF_TEST_POSTGRES_URL"):
        raise SystemExit("--postgres needs HANDOFF_TEST_POSTGRES_URL (source scripts/services.sh)")
    from bench.slack_ack import database as pg_database

    with pg_database(work) as url:
        yield url


def write_config(work: Path) -> Path:
    """handoff.yml: the default outbox pacing; the repository's Slack channel announces GitHub tasks."""
    config = {
        "slack": {
            "allow": [{"repos": [REPO], "users": [SLACK_USER]}],
            "channels": {CHANNEL: REPO},
            "announce": {"github_tasks": True},
        },
    }
    path = work / "handoff.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def bench_settings(work: Path, db_url: str, redis_url: str, github_url: str, slack_api: str) -> Settings:
    """Handoff's settings: the GitHub App and the Slack bot both pointed at the local fakes."""
    private, _public = rsa_keys()
    return load_settings(
        database_url=db_url,
        redis_url=redis_url,
        handoff_config=write_config(work),
        handoff_workspace_dir=work / "ws",
        handoff_mirror_dir=work / "mirrors",
        handoff_queue_name=f"handoff:bench:economy:{os.getpid()}:{uuid.uuid4().hex[:6]}",
        github_app_id=str(APP_ID),
        github_private_key=SecretStr(private),
        github_webhook_secret=SecretStr(WEBHOOK_SECRET),
        github_api_url=github_url,
        github_git_url=f"file://{work / 'remotes'}",
        github_app_slug="handoff",
        slack_bot_token=SecretStr(BOT_TOKEN),
        slack_signing_secret=SecretStr(SIGNING_SECRET),
        slack_api_url=slack_api,
    )


def labeled_payload() -> dict[str, Any]:
    """An ``issues.labeled`` delivery (from the vendored corpus) adding the trigger label to #1."""
    data = example("issues", "labeled")
    data["installation"] = {"id": INSTALLATION, "node_id": "x"}
    data["sender"] = {"login": SENDER, "id": 1001, "type": "User"}
    data["repository"].update(
        name="widgets", full_name=REPO, default_branch="main", owner={"login": "acme", "type": "Organization"}
    )
    data["issue"].update(
        number=ISSUE,
        title="Tidy up the widgets module",
        body="Split core.py and keep the tests green.",
        pull_request=None,
    )
    data["label"] = {"name": "handoff"}
    return data


async def skipped_run(ctx: dict[str, Any], task_id: str, gen: int) -> str:
    """Stands in for ``run_task``: the benchmark drives the run itself (no Docker)."""
    return "driven by the benchmark"


@contextlib.asynccontextmanager
async def ingest_worker(wc: WorkerServices, settings: Settings) -> AsyncIterator[Worker]:
    """An arq worker running the real ``github_ingest`` job (and swallowing the ``run_task`` job)."""
    github = next(i for i in wc.integrations if isinstance(i, GitHubIntegration))
    worker = Worker(
        functions=[
            func(github.jobs[INGEST_JOB], name=INGEST_JOB, timeout=60, max_tries=5),
            func(skipped_run, name=RUN_JOB, timeout=10, max_tries=1),
        ],
        queue_name=settings.handoff_queue_name,
        redis_settings=redis_settings(settings.redis_url),
        ctx={"handoff": wc},
        handle_signals=False,
        poll_delay=0.05,
        keep_result=60,
    )
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        await worker.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# -- the run -----------------------------------------------------------------------------------


async def until(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


async def pending_rows(wc: WorkerServices) -> int:
    """Outbox rows not delivered yet."""
    async with wc.sessions() as session:
        result = await session.execute(
            select(sql_func.count()).select_from(Outbox).where(col(Outbox.state) == "pending")
        )
        return int(result.scalar_one())


async def settle(wc: WorkerServices, quiet_s: float = 0.5) -> None:
    """Until no outbox row is pending (and stays so for ``quiet_s``)."""

    async def idle() -> bool:
        if await pending_rows(wc):
            return False
        await asyncio.sleep(quiet_s)
        return not await pending_rows(wc)

    await until(idle, SETTLE_TIMEOUT_S, "the outbox to drain")


async def create_task(settings: Settings) -> str:
    """POST the signed webhook to Handoff's API; return the task the ingest job created."""
    delivery = str(uuid.uuid4())
    body = json.dumps(labeled_payload()).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body),
    }
    async with Server(create_app(settings)) as api, httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        response = await client.post("/github/webhooks", content=body, headers=headers)
        if response.status_code != 202:
            raise SystemExit(f"webhook answered {response.status_code}: {response.text}")
    from core.db import make_engine, make_sessions

    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)

    async def created() -> str | None:
        async with sessions() as session:
            found = await session.execute(
                select(col(Task.id)).where(col(Task.dedupe_key) == f"github:{delivery}")
            )
            return found.scalar_one_or_none()

    try:
        task_id: str = await until(created, 30, "the ingest job to create the task")
    finally:
        await engine.dispose()
    return task_id


def agent_line(i: int) -> str:
    """The agent's ``i`` th stdout line: 10 % progress steps, 20 % tool calls, 10 % messages, 60 % logs."""
    kind = i % 10
    if kind == 0:
        step = f"{STEPS[(i // 10) % len(STEPS)]} ({i // 10 + 1})"
        return json.dumps({"type": "progress", "data": {"step": step}})
    if kind in (1, 6):
        path = FILES[i % len(FILES)]
        return json.dumps({"type": "tool", "data": {"name": "edit_file", "input": {"path": path}}})
    if kind == 3:
        return json.dumps({"type": "message", "data": {"text": f"Looking at {FILES[i % len(FILES)]} next."}})
    return f"[{i:04d}] ok: checked {FILES[i % len(FILES)]} line {i * 7 % 400}"


async def drive_run(wc: WorkerServices, task_id: str, events: int, seconds: float) -> Phases:
    """Lease the task as the runner does, record ``events`` events over ``seconds``, end it."""
    phases = Phases()
    journal = wc.journal
    async with wc.sessions.begin() as session:
        task = await session.get(Task, task_id, populate_existing=True)
        assert task is not None and task.state == TaskState.queued.value, task
        attempt = task.attempts + 1
        run = Run(task_id=task.id, attempt=attempt, worker_id="bench", instructions=task.instructions)
        session.add(run)
        await session.flush()
        await journal.transition(
            session,
            task,
            TaskState.running,
            run_id=run.id,
            extra={"attempt": attempt, "run_id": run.id},
            values={"attempts": attempt, "tries": task.tries + 1},
        )
    loop = asyncio.get_running_loop()
    phases.started = loop.time()
    phases.run_id = run.id
    phases.events["status"] += 1
    # Event 0 was the running transition, event ``events - 1`` is the final one: the pump records
    # the ``events - 2`` in between, one every ``gap`` seconds, as the worker would.
    gap = seconds / max(events - 1, 1)
    middle = events - 2
    pump = EventPump(wc.sessions, journal, task, run.id)
    pump.start()
    for n in range(middle):
        await asyncio.sleep(max(0.0, phases.started + (n + 1) * gap - loop.time()))
        if n == 0:
            pump.add(EventType.progress.value, {"step": "checkout", "repo": task.repo})
            phases.events["progress"] += 1
        elif n == 1:
            pump.add(EventType.progress.value, {"step": "agent", "image": "handoff-sandbox:minimal"})
            phases.events["progress"] += 1
        elif n == middle - 2:
            pump.add(EventType.progress.value, {"step": "push", "branch": f"handoff/{task.id}"})
            phases.events["progress"] += 1
        elif n == middle - 1:
            pump.push(json.dumps({"type": "result", "data": {"summary": "Split core.py; tests pass."}}))
            phases.events["result"] += 1
        else:
            line = agent_line(n)
            pump.push(line)
            phases.events[json.loads(line)["type"] if line.startswith("{") else "log"] += 1
    await pump.close()
    await asyncio.sleep(max(0.0, phases.started + (events - 1) * gap - loop.time()))
    pr_url = f"https://github.com/{REPO}/pull/101"
    async with wc.sessions.begin() as session:
        fresh = await session.get(Task, task_id, populate_existing=True)
        assert fresh is not None
        await session.execute(
            update(Run)
            .where(col(Run.id) == run.id)
            .values(
                outcome=RunOutcome.succeeded.value,
                finished_at=utcnow(),
                exit_code=0,
                branch=f"handoff/{task_id}",
                summary="Split core.py; tests pass.",
            )
        )
        await journal.transition(
            session,
            fresh,
            TaskState.succeeded,
            run_id=run.id,
            extra={
                "attempt": attempt,
                "run_id": run.id,
                "summary": "Split core.py; tests pass.",
                "files_changed": FILES[:3],
                "pr_url": pr_url,
            },
            values={
                "branch": f"handoff/{task_id}",
                "summary": "Split core.py; tests pass.",
                "pr_url": pr_url,
                "links": TaskLinks.of(fresh).with_(pr_url=pr_url, pr_number=101).dump(),
                "cancel_requested": False,
            },
        )
    phases.ended = loop.time()
    phases.events["status"] += 1
    return phases


# -- counting ----------------------------------------------------------------------------------


async def refs(wc: WorkerServices, *keys: str) -> dict[str, dict[str, Any]]:
    """The remembered remote references of ``keys``."""
    async with wc.sessions() as session:
        rows = await session.execute(select(ExternalRef).where(col(ExternalRef.key).in_(keys)))
        return {r.key: dict(r.ref) for r in rows.scalars()}


def github_writes(
    fake: TimedGitHub, task_id: str, comment_id: int | None
) -> tuple[list[Write], Counter[str]]:
    """Writes the fake GitHub received, by object; and the reads/auth calls, by operation."""
    writes: list[Write] = []
    other: Counter[str] = Counter()
    tracking_marker = marker(comment_key(task_id))
    for rec, at in zip(fake.requests, fake.times, strict=True):
        ok = 200 <= rec.status < 300
        if rec.method == "GET" or rec.op in GITHUB_AUTH_OPS:
            other[rec.op] += 1
        elif rec.op == "checks/create":
            writes.append(Write("check_run", "POST", at, ok))
        elif rec.op == "checks/update":
            writes.append(Write("check_run", "PATCH", at, ok))
        elif rec.op == "issues/create-comment":
            body = str((rec.body or {}).get("body", ""))
            obj = "tracking_comment" if tracking_marker in body else "other_comments"
            writes.append(Write(obj, "POST", at, ok))
        elif rec.op == "issues/update-comment":
            cid = int(rec.path.rsplit("/", 1)[-1])
            writes.append(
                Write("tracking_comment" if cid == comment_id else "other_comments", "PATCH", at, ok)
            )
        elif rec.op.startswith("reactions/"):
            writes.append(Write("reactions", "POST", at, ok))
        else:
            writes.append(Write("other", f"{rec.method} {rec.op}", at, ok))
    return writes, other


def slack_writes(fake: FakeSlack, status_ts: str | None) -> tuple[list[Write], Counter[str]]:
    """Writes the fake Slack received, by object; and the other calls, by method."""
    writes: list[Write] = []
    other: Counter[str] = Counter()
    for call in fake.calls:
        if call.method not in SLACK_WRITES:
            other[call.method] += 1
            continue
        ok = call.status == 200 and bool(call.response.get("ok"))
        if call.method == "chat.update":
            obj = "status_message" if call.args.get("ts") == status_ts else "other_messages"
        elif call.method == "chat.postMessage":
            if call.response.get("ts") == status_ts:
                obj = "status_message"
            elif status_ts and call.args.get("thread_ts") == status_ts:
                obj = "thread_replies"
            else:
                obj = "other_messages"
        elif call.method == "reactions.add":
            obj = "reactions"
        else:
            obj = "other"
        writes.append(Write(obj, call.method, call.at, ok))
    return writes, other


async def outbox_rows(wc: WorkerServices, task_id: str, channel: str) -> dict[str, int]:
    """The task's outbox rows on ``channel`` by state (and in all)."""
    async with wc.sessions() as session:
        rows = await session.execute(
            select(col(Outbox.state), sql_func.count())
            .where(col(Outbox.task_id) == task_id, col(Outbox.channel) == channel)
            .group_by(col(Outbox.state))
        )
        by_state = {str(state): int(n) for state, n in rows.all()}
    return {"written": sum(by_state.values()), **by_state}


def gaps(writes: list[Write]) -> dict[str, dict[str, float]]:
    """Seconds between consecutive writes to each object (the pacing as the target saw it)."""
    out: dict[str, dict[str, float]] = {}
    for obj in sorted({w.obj for w in writes}):
        times = sorted(w.at for w in writes if w.obj == obj)
        deltas = [b - a for a, b in itertools.pairwise(times)]
        if deltas:
            out[obj] = {
                "min": round(min(deltas), 3),
                "p50": round(pct(deltas, 0.5), 3),
                "p90": round(pct(deltas, 0.9), 3),
                "max": round(max(deltas), 3),
            }
    return out


def channel_report(
    writes: list[Write],
    phases: Phases,
    final_objects: dict[str, bool],
    events: int,
    rows: dict[str, int],
    other_calls: Counter[str],
) -> dict[str, Any]:
    """Counts, phases and delays of one channel."""
    by_object: dict[str, Counter[str]] = {}
    for w in writes:
        by_object.setdefault(w.obj, Counter())[w.action] += 1
    total = len(writes)
    last = max((w.at for w in writes), default=None)
    final_state: dict[str, float | None] = {}
    for obj in final_objects:
        after = [w.at for w in writes if w.obj == obj and w.ok and w.at >= phases.ended]
        final_state[obj] = round(max(after) - phases.ended, 3) if after else None
    last_delay = round(last - phases.ended, 3) if last is not None and last >= phases.ended else None
    delivered = all(final_objects.values()) and all(v is not None for v in final_state.values())
    report: dict[str, Any] = {
        "writes": total,
        "writes_by_object": {k: dict(v) for k, v in sorted(by_object.items())},
        "failed_writes": sum(1 for w in writes if not w.ok),
        "writes_by_phase": {
            "queued (before the run)": sum(1 for w in writes if w.at < phases.started),
            "during the run": sum(1 for w in writes if phases.started <= w.at < phases.ended),
            "after the final event": sum(1 for w in writes if w.at >= phases.ended),
        },
        "gap_between_writes_s": gaps(writes),
        "outbox_rows": rows,
        "naive_writes": events,
        "reduction_vs_naive": round(events / total, 1) if total else None,
        "final_event_to_last_write_s": last_delay,
        "final_event_to_final_state_s": final_state,
        "final_state_correct": final_objects,
        "final_state_delivered": delivered,
        "not_counted": dict(sorted(other_calls.items())),
    }
    worst = max((v for v in final_state.values() if v is not None), default=None)
    report["meets_writes_target"] = total <= WRITE_TARGET
    report["meets_delay_target"] = (
        delivered
        and last_delay is not None
        and last_delay <= DELAY_TARGET_S
        and (worst or 0) <= DELAY_TARGET_S
    )
    return report


def verdict(name: str, report: dict[str, Any]) -> str:
    """One line: writes against the target and the naive cost, and the end-to-last-write delay."""
    writes_ok = "meets" if report["meets_writes_target"] else "MISSES"
    delay_ok = "meets" if report["meets_delay_target"] else "MISSES"
    delay = report["final_event_to_last_write_s"]
    shown = f"{delay:.2f} s" if delay is not None else "never"
    objects = ", ".join(f"{k} {sum(v.values())}" for k, v in report["writes_by_object"].items())
    return (
        f"{name}: {report['writes']} writes ({objects}) vs naive {report['naive_writes']} "
        f"({writes_ok} <= {WRITE_TARGET}); final write {shown} after the final event "
        f"({delay_ok} <= {DELAY_TARGET_S:g} s)"
    )


# -- main --------------------------------------------------------------------------------------


async def bench(events: int, seconds: float, postgres: bool, redis_url: str) -> int:
    """Run the whole benchmark; print the report; return the exit status."""
    with tempfile.TemporaryDirectory(prefix="handoff-bench-economy-", ignore_cleanup_errors=True) as tmp:
        return await measure(Path(tmp), events, seconds, postgres, redis_url)


async def measure(work: Path, events: int, seconds: float, postgres: bool, redis_url: str) -> int:
    """The benchmark in the directory ``work``; print the report; return the exit status."""
    _private, public = rsa_keys()
    gh = TimedGitHub(APP_ID, public)
    gh.installations.add(INSTALLATION)
    gh.permissions[(REPO, SENDER)] = "write"
    slack = FakeSlack()
    with database(work, postgres) as db_url:
        upgrade(db_url)
        async with Server(gh.app) as gh_server, Server(slack.app) as slack_server:
            slack.bind(slack_server.url)
            settings = bench_settings(work, db_url, redis_url, gh_server.url, slack.api_url)
            wc: WorkerServices = worker_services(settings)
            github = next(i for i in wc.integrations if isinstance(i, GitHubIntegration))
            gh_write_interval = float(github.github.server.write_interval_s)
            sender = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox)
            stop = asyncio.Event()
            sender_task = asyncio.create_task(sender.run(stop), name="outbox-sender")
            try:
                async with ingest_worker(wc, settings):
                    task_id = await create_task(settings)
                    await settle(wc)  # the "queued" check run, comment, 👀 and Slack announcement
                phases = await drive_run(wc, task_id, events, seconds)
                await settle(wc)
            finally:
                stop.set()
                await sender_task
            known = await refs(wc, check_key(task_id), comment_key(task_id), f"slack:status:{task_id}")
            gh_rows = await outbox_rows(wc, task_id, "github")
            slack_rows = await outbox_rows(wc, task_id, "slack")
            async with wc.sessions() as session:
                stored = await session.execute(
                    select(sql_func.count())
                    .select_from(RunEvent)
                    .where(col(RunEvent.run_id) == phases.run_id)
                )
                stored_events = int(stored.scalar_one())
                task = await session.get(Task, task_id)
            await wc.close()
    assert task is not None
    comment_id = known.get(comment_key(task_id), {}).get("id")
    check_id = known.get(check_key(task_id), {}).get("id")
    status_ref = known.get(f"slack:status:{task_id}", {})
    status_msg = slack.messages.get((str(status_ref.get("channel")), str(status_ref.get("ts"))))
    check = gh.checks.get(int(check_id)) if check_id else None
    comment = gh.comments.get(int(comment_id)) if comment_id else None

    gh_writes, gh_other = github_writes(gh, task_id, int(comment_id) if comment_id else None)
    sl_writes, sl_other = slack_writes(slack, status_ref.get("ts"))
    gh_final = {
        "check_run": bool(
            check and check.get("status") == "completed" and check.get("conclusion") == "success"
        ),
        "tracking_comment": bool(comment and "**Done**" in comment["body"]),
    }
    replies = slack.thread(CHANNEL, str(status_ref.get("ts"))) if status_ref else []
    sl_final = {
        "status_message": bool(status_msg and status_msg.text.endswith("Succeeded")),
        "thread_replies": any("*Finished:*" in r.text for r in replies),
    }
    report: dict[str, Any] = {
        "run": {
            "events": events,
            "seconds": seconds,
            "run_events_stored": stored_events,
            "events_by_type": dict(sorted(phases.events.items())),
            "run_duration_s": round(phases.ended - phases.started, 2),
            "task": task_id,
            "task_state": task.state,
            "database": "postgresql" if db_url.startswith("postgres") else "sqlite",
        },
        "pacing": {
            "outbox": wc.config.outbox.model_dump(),
            "github_client_write_interval_s": gh_write_interval,
            "slack_notifier": {
                "per_message_s": MESSAGE_INTERVAL_S,
                "chat_update_s": UPDATE_INTERVAL_S,
                "replies_per_channel_s": CHANNEL_INTERVAL_S,
            },
        },
        "reference_naive_writes_per_channel": events,
        "targets": {"writes_per_channel": WRITE_TARGET, "final_state_within_s": DELAY_TARGET_S},
        "github": channel_report(gh_writes, phases, gh_final, events, gh_rows, gh_other),
        "slack": channel_report(sl_writes, phases, sl_final, events, slack_rows, sl_other),
        "fake_errors": {"github": gh.errors, "slack": slack.violations},
    }
    print(json.dumps(report, indent=2))
    print(verdict("github", report["github"]))
    print(verdict("slack", report["slack"]))
    delivered = report["github"]["final_state_delivered"] and report["slack"]["final_state_delivered"]
    return 0 if delivered and not gh.errors and not slack.violations else 1


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the run emits events")
    parser.add_argument("--events", type=int, default=1000, help="events recorded by the run (>= 6)")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database")
    args = parser.parse_args()
    if args.events < 6 or not 0 < args.seconds <= 600:
        parser.error("--events must be >= 6 and --seconds in (0, 600]")
    logging.basicConfig(level=logging.WARNING)
    # The throwaway API announces a dashboard sign-in link at start: not part of the report.
    logging.getLogger("web.dashboard").setLevel(logging.ERROR)
    redis_url = os.environ.get("HANDOFF_TEST_REDIS_URL") or os.environ.get(
        "REDIS_URL", "redis://127.0.0.1:6379/0"
    )
    sys.exit(asyncio.run(bench(args.events, args.seconds, args.postgres, redis_url)))


if __name__ == "__main__":
    main()
