"""What automations cost per delivery: the ``github_ingest`` job deciding rules on a CI result.

Check suites and workflow runs complete for every push of every repository the App is on: they are
the most frequent deliveries automations read, and nearly all of them fire nothing (a success, a
branch no rule covers). Each still goes through the ingest job: the repository's ``.handoff.yml``
(cached), the rules listening to the event, and one ledger row and audit entry per skip.

Measured, on the real job body (``github_app.ingest.Ingest.run``) against the fake GitHub on
loopback and a real database, one delivery at a time:

* **reference** (same run): an ``issues.labeled`` delivery with a label that is not the trigger —
  the job reads ``.handoff.yml`` and answers "ignored", the cheapest path a routed event had before;
* **automation skip**: a ``check_suite.completed`` (success) with three server rules, one of them
  (fix-ci) listening: matched, skipped, recorded;
* **automation skip, many rules**: the same with 20 rules listening.

Target: a skipped automation costs at most twice the reference per delivery (p50). Run with
``uv run python bench/automations.py [--deliveries 300] [--postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, summary
from bench.report_economy import database
from core.clock import utcnow
from core.models import Delivery
from core.settings import load_settings
from github_app.ingest import Ingest
from github_app.integration import GitHubIntegration
from tests.fakes.github_api import FakeGitHub
from tests.support.github import example, rsa_keys
from web.integrations import worker_services
from web.migrate import upgrade

APP_ID, INSTALLATION, REPO = 4242, 77, "acme/widgets"
TARGET_RATIO = 2.0
RULES: list[dict[str, Any]] = [
    {"name": "review-prs", "events": ["pull_request.opened", "pull_request.synchronize"], "do": "review"},
    {"name": "fix-ci", "events": ["check_suite.completed"], "if": {"conclusion": "failure"}, "do": "fix-ci"},
    {"name": "nightly", "schedule": "0 3 * * 1-5", "repos": [REPO], "do": "work", "instructions": "x"},
]


def _config(work: Path, rules: list[dict[str, Any]]) -> Path:
    path = work / f"handoff-{len(rules)}.yml"
    path.write_text(yaml.safe_dump({"automations": rules}))
    return path


def _payloads() -> dict[str, tuple[str, dict[str, Any]]]:
    labeled = example("issues", "labeled")
    labeled["label"] = {"name": "bug"}
    suite = example("check_suite", "completed")
    for data in (labeled, suite):
        data["installation"] = {"id": INSTALLATION}
        data["repository"].update(full_name=REPO, name="widgets", default_branch="main")
        data["sender"] = {"login": "alice", "type": "User", "id": 1}
    return {"reference": ("issues.labeled", labeled), "automation": ("check_suite.completed", suite)}


async def _measure(
    work: Path, db_url: str, github_url: str, rules: list[dict[str, Any]], n: int
) -> dict[str, list[float]]:
    private, _ = rsa_keys()
    settings = load_settings(
        database_url=db_url,
        redis_url=os.environ.get("HANDOFF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        handoff_config=_config(work, rules),
        handoff_workspace_dir=work / "ws",
        handoff_mirror_dir=work / "mirrors",
        handoff_queue_name=f"handoff:bench:automations:{uuid.uuid4().hex[:6]}",
        github_app_id=str(APP_ID),
        github_private_key=SecretStr(private),
        github_webhook_secret=SecretStr("s"),
        github_api_url=github_url,
        github_app_slug="handoff",
    )
    wc = worker_services(settings)
    github = next(i for i in wc.integrations if isinstance(i, GitHubIntegration))
    ingest = Ingest(github.github)
    events = github.github.events
    times: dict[str, list[float]] = {}
    try:
        for label, (name, payload) in _payloads().items():
            event = name.partition(".")[0]
            slim = events.screen(event, payload, github.github.screening).slim
            assert slim is not None, f"{name} is not routed"
            times[label] = []
            for i in range(n + 20):  # the first 20 warm the caches and the pool
                delivery = f"{label}-{uuid.uuid4()}"
                async with wc.sessions.begin() as session:
                    session.add(
                        Delivery(
                            id=delivery, source="github", event=name, outcome="received", received_at=utcnow()
                        )
                    )
                started = time.perf_counter()
                outcome = await ingest.run({}, delivery, name, slim)
                if i >= 20:
                    times[label].append(time.perf_counter() - started)
            print(f"  {name}: {outcome}")
    finally:
        await wc.close()
    return times


async def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="handoff-bench-automations-"))
    _, public = rsa_keys()
    fake = FakeGitHub(APP_ID, public)
    fake.installations.add(INSTALLATION)
    fake.files[(REPO, ".handoff.yml")] = "agent: shell\n"
    many: list[dict[str, Any]] = RULES + [
        {
            "name": f"ci-{i}",
            "events": ["check_suite.completed"],
            "if": {"conclusion": "failure"},
            "do": "fix-ci",
        }
        for i in range(19)
    ]
    results: dict[str, dict[str, float]] = {}
    async with Server(fake.app) as gh:
        with database(work, args.postgres) as db_url:
            upgrade(db_url)
            three = await _measure(work, db_url, gh.url, RULES, args.deliveries)
            twenty = await _measure(work, db_url, gh.url, many, args.deliveries)
    results["reference: issues.labeled, ignored"] = summary(three["reference"])
    results["check_suite.completed, 1 of 3 rules listening, skipped"] = summary(three["automation"])
    results["check_suite.completed, 20 rules listening, skipped"] = summary(twenty["automation"])
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\nper delivery, {args.deliveries} deliveries one at a time, {backend} (ms):")
    for name, s in results.items():
        print(f"  {name:55s} p50 {s['p50']:6.2f}  p99 {s['p99']:6.2f}")
    ref = results["reference: issues.labeled, ignored"]["p50"]
    one = results["check_suite.completed, 1 of 3 rules listening, skipped"]["p50"]
    many_p50 = results["check_suite.completed, 20 rules listening, skipped"]["p50"]
    ratio = one / ref
    print(
        f"\nskip vs reference: {ratio:.2f}x (20 rules: {many_p50 / ref:.2f}x); target ≤ {TARGET_RATIO}x: "
        + ("met" if ratio <= TARGET_RATIO else "MISSED")
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=300)
    parser.add_argument("--postgres", action="store_true")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
