"""The outbox: delivered once in effect through 500s, 429s and lost answers; coalesced; paced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from core.models import Outbox, Task
from core.settings import Settings
from jobs.outbox import OutboxSender
from jobs.services import WorkerServices
from tests.fakes.webhook_target import Fault, WebhookTarget
from tests.support.env import LiveServer, write_config
from web.integrations import worker_services


@pytest.fixture
async def target() -> AsyncIterator[tuple[WebhookTarget, str]]:
    fake = WebhookTarget()
    async with LiveServer(fake.app) as server:
        yield fake, f"{server.url}/status"


def _ctx(settings: Settings, tmp_path: Path, url: str, **webhook: Any) -> WorkerServices:
    config = write_config(
        tmp_path / "handoff-webhook.yml",
        webhooks=[{"url": url, "min_interval_s": 0.5, "timeout_s": 1.0, **webhook}],
        outbox={"horizon_s": 3.0, "max_backoff_s": 0.5, "poll_s": 0.05},
    )
    wc: WorkerServices = worker_services(settings.model_copy(update={"handoff_config": config}))
    return wc


async def _task(wc: WorkerServices) -> Task:
    async with wc.sessions.begin() as session:
        task = Task(repo="octo/demo", instructions="x")
        session.add(task)
    return task


async def _status(wc: WorkerServices, task: Task, state: str, **data: Any) -> None:
    async with wc.sessions.begin() as session:
        fresh = await session.get(Task, task.id)
        assert fresh is not None
        await wc.journal.append_event(session, fresh, None, "status", {"state": state, **data})


async def _drain(sender: OutboxSender, wc: WorkerServices, timeout: float = 10.0) -> list[Outbox]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await sender.tick()
        async with wc.sessions() as session:
            rows = list((await session.execute(select(Outbox).order_by(col(Outbox.id)))).scalars())
        if rows and all(r.state != "pending" for r in rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"outbox not drained: {[(r.id, r.state, r.last_error) for r in rows]}")


async def test_500_then_success_is_delivered_once(
    settings: Settings, tmp_path: Path, target: tuple[WebhookTarget, str]
) -> None:
    fake, url = target
    wc = _ctx(settings, tmp_path, url)
    sender = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox)
    task = await _task(wc)
    fake.fail(Fault(status=500))
    await _status(wc, task, "queued")
    rows = await _drain(sender, wc)
    assert [r.state for r in rows] == ["sent"]
    assert rows[0].attempts == 2
    assert len(fake.records) == 1
    assert next(iter(fake.records.values()))["state"] == "queued"
    await wc.close()


async def test_429_retry_after_is_honoured(
    settings: Settings, tmp_path: Path, target: tuple[WebhookTarget, str]
) -> None:
    fake, url = target
    wc = _ctx(settings, tmp_path, url)
    sender = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox)
    task = await _task(wc)
    fake.fail(Fault(status=429, headers={"Retry-After": "2"}))
    await _status(wc, task, "running")
    await _drain(sender, wc)
    posts = [r for r in fake.requests if r.method == "POST"]
    assert [p.status for p in posts] == [429, 201]
    assert posts[1].at - posts[0].at >= 1.9  # the advertised wait, not our own backoff
    assert len(fake.records) == 1
    await wc.close()


async def test_create_applied_but_answer_lost_is_not_duplicated(
    settings: Settings, tmp_path: Path, target: tuple[WebhookTarget, str]
) -> None:
    fake, url = target
    wc = _ctx(settings, tmp_path, url)
    sender = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox)
    task = await _task(wc)
    # The create is stored, then the answer takes longer than the client's 1 s timeout.
    fake.fail(Fault(status=200, apply=True, hang_s=1.5, method="POST"))
    await _status(wc, task, "running")
    await _drain(sender, wc)
    await _status(wc, task, "succeeded", summary="done")
    await _drain(sender, wc)
    assert len(fake.records) == 1, fake.records
    record = next(iter(fake.records.values()))
    assert record["state"] == "succeeded" and record["summary"] == "done"
    methods = [r.method for r in fake.requests]
    assert methods.count("POST") == 1 and "GET" in methods
    # A 502 after applying an update is also harmless: updates are idempotent.
    fake.fail(Fault(status=502, apply=True, method="PUT"))
    await _status(wc, task, "queued")
    await _status(wc, task, "failed", reason="x")
    await _drain(sender, wc)
    assert len(fake.records) == 1 and next(iter(fake.records.values()))["state"] == "failed"
    await wc.close()


async def test_bursts_coalesce_and_final_state_wins(
    settings: Settings, tmp_path: Path, target: tuple[WebhookTarget, str]
) -> None:
    fake, url = target
    wc = _ctx(settings, tmp_path, url)
    stop = asyncio.Event()
    sender = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox)
    runner = asyncio.create_task(sender.run(stop))
    task = await _task(wc)
    start = time.monotonic()
    for i in range(200):
        await _status(wc, task, "running", step=i)
        await asyncio.sleep(0.01)
    await _status(wc, task, "succeeded", summary="final")
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(r.get("state") == "succeeded" for r in fake.records.values()):
            break
        await asyncio.sleep(0.05)
    final_at = time.monotonic()
    stop.set()
    await runner
    writes = fake.writes()
    # One write per 0.5 s pacing interval (plus the first and the final one), not 201.
    assert len(writes) <= elapsed / 0.5 + 3, (len(writes), elapsed)
    assert next(iter(fake.records.values()))["state"] == "succeeded"
    assert final_at - start - elapsed < 1.5
    async with wc.sessions() as session:
        states = [r.state for r in (await session.execute(select(Outbox))).scalars()]
    assert states.count("superseded") > 150 and "pending" not in states
    await wc.close()


async def test_gives_up_after_horizon_and_on_4xx(
    settings: Settings, tmp_path: Path, target: tuple[WebhookTarget, str]
) -> None:
    fake, url = target
    wc = _ctx(settings, tmp_path, url)
    sender = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox)
    task = await _task(wc)
    fake.fail(*[Fault(status=503) for _ in range(100)])
    await _status(wc, task, "running")
    rows = await _drain(sender, wc, timeout=15)
    assert rows[-1].state == "failed"
    assert "gave up after" in (rows[-1].last_error or "") and "503" in (rows[-1].last_error or "")
    fake.faults.clear()
    fake.fail(Fault(status=400, method="POST"))
    task2 = await _task(wc)
    await _status(wc, task2, "running")
    rows = await _drain(sender, wc)
    assert rows[-1].state == "failed" and "HTTP 400" in (rows[-1].last_error or "")
    await wc.close()


async def test_only_one_sender_holds_the_lease(
    settings: Settings, tmp_path: Path, target: tuple[WebhookTarget, str]
) -> None:
    _fake, url = target
    wc = _ctx(settings, tmp_path, url)
    first = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox, holder="a")
    second = OutboxSender(wc.sessions, wc.notifiers, wc.config.outbox, holder="b")
    assert await first.acquire_lease()
    assert not await second.acquire_lease()
    await first.release_lease()
    assert await second.acquire_lease()
    await wc.close()


async def test_reaper_prunes_old_deliveries_and_finished_notifications(sqlite_settings: Settings) -> None:
    from datetime import timedelta

    from core.clock import utcnow
    from core.models import Delivery
    from jobs.reaper import Reaper

    wc = worker_services(sqlite_settings)
    old = utcnow() - timedelta(days=30)
    async with wc.sessions.begin() as session:
        session.add_all(
            [
                Delivery(id="old", source="github", event="issues", received_at=old),
                Delivery(id="new", source="github", event="issues"),
                Outbox(channel="webhook", key="k", kind="upsert", state="sent", created_at=old),
                Outbox(channel="webhook", key="k", kind="upsert", state="pending", created_at=old),
                Outbox(channel="webhook", key="k", kind="upsert", state="sent"),
            ]
        )
    assert await Reaper(wc).prune(every_s=0) == 2
    async with wc.sessions() as session:
        assert [d.id for d in (await session.execute(select(Delivery))).scalars()] == ["new"]
        left = [
            (o.state, o.created_at < utcnow() - timedelta(days=1))
            for o in (await session.execute(select(Outbox))).scalars()
        ]
    assert sorted(left) == [("pending", True), ("sent", False)]  # a pending one is never dropped
    assert await Reaper(wc).prune() == 0  # at most hourly
    await wc.close()
