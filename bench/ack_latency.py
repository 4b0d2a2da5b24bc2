"""Acknowledgement first: how soon a new request's 👀 (and Slack announcement) lands, quiet vs busy.

Each request is a signed ``issues.labeled`` webhook posted to Handoff's API; the real
``github_ingest`` job (on a real arq worker) turns it into a task and writes its first notifications
to the outbox, and the real :class:`~jobs.outbox.OutboxSender` delivers them through the real
notifiers to the fake GitHub and fake Slack on loopback (``tests/fakes/``), with the default pacing.
Measured: from the POST of the webhook to the fake GitHub receiving the 👀 reaction, and to the
fake Slack receiving the task's status message (the announcement in the repository's channel).

* **quiet** (the reference, same run): one request at a time, the installation otherwise idle;
* **back to back**: three earlier tasks are running and printing (their tracking comments, check
  runs and Slack status messages are edited as fast as the pacing allows), and requests come in
  pairs, the second ``PAIR_GAP_S`` after the first — each arrives while other tasks' progress
  writes, and the first one's comment and check-run writes, still go out. Pairs come
  ``PAIRS_EVERY_S`` apart: 8 new requests a minute on one installation, within the lane's budget
  (GitHub allows 80 content creations a minute; each request costs two acknowledgements).

Target: 👀 p50 ≤ 0.5 s back to back. Run with Redis up (``source scripts/services.sh``):
``uv run python bench/ack_latency.py [--requests 12] [--postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import col

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, pct
from bench.report_economy import (
    APP_ID,
    INSTALLATION,
    REPO,
    SENDER,
    WEBHOOK_SECRET,
    TimedGitHub,
    bench_settings,
    database,
    drive_run,
    ingest_worker,
    labeled_payload,
    refs,
    settle,
    until,
)
from core.models import Task
from github_app.signature import sign
from jobs.outbox import OutboxSender
from jobs.services import WorkerServices
from tests.fakes.slack_api import FakeSlack
from tests.support.github import rsa_keys
from web.app import create_app
from web.integrations import worker_services
from web.migrate import upgrade

TARGET_P50_S = 0.5
BUSY_TASKS = 3
PAIR_GAP_S = 0.3
PAIRS_EVERY_S = 15.0


class Requests:
    """Posts webhooks for new issues and finds when their acknowledgements arrived."""

    def __init__(
        self, client: httpx.AsyncClient, gh: TimedGitHub, slack: FakeSlack, wc: WorkerServices
    ) -> None:
        self.client, self.gh, self.slack, self.wc = client, gh, slack, wc
        self.issue = 100
        self.posted: dict[int, tuple[float, str]] = {}  # issue -> (monotonic time, delivery id)

    async def post(self) -> int:
        """One signed ``issues.labeled`` delivery for a new issue; return its number."""
        self.issue += 1
        data = labeled_payload()
        data["issue"]["number"] = self.issue
        body = json.dumps(data).encode()
        delivery = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Hook-ID": "1",
            "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body),
        }
        self.posted[self.issue] = (time.monotonic(), delivery)
        response = await self.client.post("/github/webhooks", content=body, headers=headers)
        if response.status_code != 202:
            raise SystemExit(f"webhook answered {response.status_code}: {response.text}")
        return self.issue

    def eyes_at(self, issue: int) -> float | None:
        """When the fake GitHub received the 👀 on ``issue``."""
        suffix = f"/issues/{issue}/reactions"
        for request, at in zip(self.gh.requests, self.gh.times, strict=True):
            if request.method == "POST" and request.path.endswith(suffix):
                return at
        return None

    async def task_of(self, issue: int) -> str:
        """The task the delivery for ``issue`` created."""
        delivery = self.posted[issue][1]

        async def found() -> str | None:
            async with self.wc.sessions() as session:
                rows = await session.execute(
                    select(col(Task.id)).where(col(Task.dedupe_key) == f"github:{delivery}")
                )
                found_id = rows.scalar_one_or_none()
                return str(found_id) if found_id is not None else None

        task_id: str = await until(found, 30, f"the task of issue #{issue}")
        return task_id

    async def latencies(self, issues: list[int]) -> dict[str, list[float]]:
        """Seconds from each POST to its 👀 and to its Slack status message."""
        eyes, slack = [], []
        for issue in issues:
            posted = self.posted[issue][0]
            seen = await until(lambda i=issue: _async(self.eyes_at(i)), 30, f"the 👀 on #{issue}")
            eyes.append(seen - posted)
            task_id = await self.task_of(issue)
            ref = await until(
                lambda t=task_id: _ref(self.wc, f"slack:status:{t}"), 30, f"the Slack message of {task_id}"
            )
            posts = [c for c in self.slack.of("chat.postMessage") if c.response.get("ts") == ref.get("ts")]
            slack.append(posts[0].at - posted)
        return {"eyes": eyes, "slack_status": slack}


async def _async(value: Any) -> Any:
    return value


async def _ref(wc: WorkerServices, key: str) -> dict[str, Any] | None:
    known = await refs(wc, key)
    ref = known.get(key)
    return ref if ref and ref.get("ts") else None


def stats(values: list[float]) -> dict[str, float]:
    """p50, p90 and max in seconds."""
    return {
        "p50_s": round(pct(values, 0.5), 3),
        "p90_s": round(pct(values, 0.9), 3),
        "max_s": round(max(values), 3),
    }


async def measure(work: Path, requests: int, postgres: bool, redis_url: str) -> int:
    """Both cases in one run; print the report; return the exit status."""
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
            wc = worker_services(settings)
            sender = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox)
            stop = asyncio.Event()
            sender_task = asyncio.create_task(sender.run(stop), name="outbox-sender")
            try:
                async with (
                    ingest_worker(wc, settings),
                    Server(create_app(settings)) as api,
                    httpx.AsyncClient(base_url=api.url, timeout=10) as client,
                ):
                    req = Requests(client, gh, slack, wc)
                    quiet = []
                    for _ in range(requests):
                        issue = await req.post()
                        await until(lambda i=issue: _async(req.eyes_at(i)), 30, "the 👀")
                        await settle(wc)
                        quiet.append(issue)
                    quiet_lat = await req.latencies(quiet)
                    # Busy: earlier tasks running and printing, then requests one after the other.
                    busy_tasks = []
                    for _ in range(BUSY_TASKS):
                        busy_tasks.append(await req.task_of(await req.post()))
                    await settle(wc)
                    pairs = (requests + 1) // 2
                    seconds = pairs * PAIRS_EVERY_S + 15
                    runs = [
                        asyncio.create_task(drive_run(wc, t, int(seconds * 20), seconds)) for t in busy_tasks
                    ]
                    await asyncio.sleep(3.0)  # their running state and first progress go out
                    busy = []
                    for _ in range(pairs):
                        started = time.monotonic()
                        busy.append(await req.post())
                        await asyncio.sleep(PAIR_GAP_S)
                        busy.append(await req.post())
                        await asyncio.sleep(max(0.0, started + PAIRS_EVERY_S - time.monotonic()))
                    busy_lat = await req.latencies(busy)
                    for run in runs:
                        run.cancel()
                    await asyncio.gather(*runs, return_exceptions=True)
            finally:
                stop.set()
                await sender_task
                await wc.close()
    report: dict[str, Any] = {
        "requests_per_case": requests,
        "database": "postgresql" if postgres else "sqlite",
        "pacing": wc.config.outbox.model_dump(),
        "quiet (reference)": {k: stats(v) for k, v in quiet_lat.items()},
        "back_to_back": {k: stats(v) for k, v in busy_lat.items()},
        "busy_load": {
            "running_tasks": BUSY_TASKS,
            "events_per_s_each": 20,
            "pair_gap_s": PAIR_GAP_S,
            "pairs_every_s": PAIRS_EVERY_S,
        },
        "github_writes_total": sum(1 for r in gh.requests if r.method in ("POST", "PATCH")),
        "fake_errors": {"github": gh.errors, "slack": slack.violations},
    }
    print(json.dumps(report, indent=2))
    p50 = report["back_to_back"]["eyes"]["p50_s"]
    ratio = p50 / max(report["quiet (reference)"]["eyes"]["p50_s"], 1e-3)
    mark = "✔" if p50 <= TARGET_P50_S else "✘"
    print(
        f"👀 back to back p50 {p50:.2f} s vs quiet {report['quiet (reference)']['eyes']['p50_s']:.2f} s "
        f"({ratio:.1f}x); target ≤ {TARGET_P50_S} s {mark}"
    )
    return 0 if not gh.errors and not slack.violations else 1


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10, help="requests per case")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("web.dashboard").setLevel(logging.ERROR)
    redis_url = os.environ.get("HANDOFF_TEST_REDIS_URL") or os.environ.get(
        "REDIS_URL", "redis://127.0.0.1:6379/0"
    )
    with tempfile.TemporaryDirectory(prefix="handoff-bench-ack-", ignore_cleanup_errors=True) as tmp:
        sys.exit(asyncio.run(measure(Path(tmp), args.requests, args.postgres, redis_url)))


if __name__ == "__main__":
    main()
