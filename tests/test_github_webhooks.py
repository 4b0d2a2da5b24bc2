"""``POST /github/webhooks``: signatures, refusals, durable dedupe, the whole example corpus."""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from core.settings import Settings
from github_app.ingest import job_id
from github_app.signature import sign, verify
from tests.support.env import LiveServer
from tests.support.github import OLD_SECRET, SECRET, corpus, github_world, handoff_api

PG = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
MARKER = "do-not-log-7f3a9c"


def test_githubs_documented_test_vector() -> None:
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign("It's a Secret to Everybody", b"Hello, World!") == expected
    assert verify(["It's a Secret to Everybody"], b"Hello, World!", expected)
    assert verify(["rotated-new", "It's a Secret to Everybody"], b"Hello, World!", expected)
    assert not verify(["It's a Secret to Everybody"], b"Hello, World?", expected)
    assert not verify(["It's a Secret to Everybody"], b"Hello, World!", expected.removeprefix("sha256="))
    assert not verify([], b"Hello, World!", expected)


async def _queued(settings: Settings) -> int:
    client = aioredis.from_url(  # type: ignore[no-untyped-call]
        settings.redis_url
    )
    try:
        return int(await client.zcard(settings.handoff_queue_name))
    finally:
        await client.aclose()


def _body() -> bytes:
    payload = {"action": "created", "zen": MARKER, "hook_id": 1}
    return json.dumps(payload).encode()


def _case(name: str) -> tuple[bytes, dict[str, str]]:
    body = _body()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, body),
    }
    if name == "no-signature":
        del headers["X-Hub-Signature-256"]
    elif name == "sha1-only":
        import hashlib
        import hmac

        del headers["X-Hub-Signature-256"]
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    elif name == "tampered-body":
        body = body.replace(b"created", b"deleted")
    elif name == "wrong-secret":
        headers["X-Hub-Signature-256"] = sign("not the secret", body)
    elif name == "bare-hex":
        headers["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"].removeprefix("sha256=")
    elif name == "no-event":
        del headers["X-GitHub-Event"]
    elif name == "no-delivery":
        del headers["X-GitHub-Delivery"]
    elif name == "form-encoded":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif name == "not-json":
        body = b"payload=" + body
        headers["X-Hub-Signature-256"] = sign(SECRET, body)
    return body, headers


REFUSALS = [
    ("no-signature", 401),
    ("sha1-only", 401),
    ("tampered-body", 401),
    ("wrong-secret", 401),
    ("bare-hex", 401),
    ("no-event", 400),
    ("no-delivery", 400),
    ("form-encoded", 415),
    ("not-json", 400),
]


@PG
async def test_refusals_store_log_and_queue_nothing(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with github_world(settings, tmp_path) as world, handoff_api(world) as client:
        for name, status in REFUSALS:
            body, headers = _case(name)
            response = await client.post("/github/webhooks", content=body, headers=headers)
            assert response.status_code == status, (name, response.text)
        # Over 25 MB: refused from Content-Length before reading (and when streamed without one).
        big = b"x" * (25 * 1024 * 1024 + 1)
        response = await client.post("/github/webhooks", content=big, headers=_case("ok")[1])
        assert response.status_code == 413

        async def chunks() -> Any:
            for _ in range(26):
                yield b"y" * (1024 * 1024)

        response = await client.post("/github/webhooks", content=chunks(), headers=_case("ok")[1])
        assert response.status_code == 413
        assert await world.deliveries() == {}
        assert await world.outbox() == []
        assert await _queued(world.settings) == 0
    assert MARKER not in caplog.text


async def test_valid_delivery_is_recorded_and_a_repeat_is_a_no_op(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, handoff_api(world) as client:
        payload = world.payload("issue_comment", "created", comment={"body": "/handoff help", "id": 5})
        first = await world.send(client, "issue_comment", payload, delivery="d-1")
        again = await world.send(client, "issue_comment", payload, delivery="d-1")
        rotated = await world.send(client, "ping", {"zen": "hi", "hook_id": 1}, secret=OLD_SECRET)
        assert (first.status_code, again.status_code, rotated.status_code) == (202, 200, 202)
        assert again.json()["duplicate"] is True
        rows = await world.deliveries()
        assert rows["d-1"].event == "issue_comment.created" and rows["d-1"].outcome == "received"
        assert await _queued(world.settings) == 1  # the ping is recorded, not queued


async def test_concurrent_duplicates_make_one_row_and_one_job(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, handoff_api(world) as client:
        payload = world.payload("issue_comment", "created", comment={"body": "/handoff status", "id": 6})
        responses = await asyncio.gather(
            *(world.send(client, "issue_comment", payload, delivery="same") for _ in range(20))
        )
        assert sorted({r.status_code for r in responses}) in ([200, 202], [202])
        assert sum(r.status_code == 202 for r in responses) == 1
        assert list(await world.deliveries()) == ["same"]
        assert await _queued(world.settings) == 1


@PG
async def test_whole_example_corpus_is_answered_2xx(settings: Settings, tmp_path: Path) -> None:
    """Every payload of @octokit/webhooks-examples (all events, actions, GHES versions) gets a 2xx."""
    from github_app.ingest import Ingest
    from github_app.routing import Screened

    names = ["api.github.com", "ghes-31", "ghes-32", "ghes-33", "ghes-34", "ghes-35"]
    sent: list[tuple[str, str, dict[str, Any]]] = []
    async with github_world(settings, tmp_path) as world, handoff_api(world) as client:
        for name in names:
            for definition in corpus(name):
                for i, payload in enumerate(definition["examples"]):
                    delivery = f"{name}:{definition['name']}:{i}"
                    response = await world.send(client, definition["name"], payload, delivery=delivery)
                    assert response.status_code in (200, 202), (delivery, response.status_code, response.text)
                    sent.append((delivery, definition["name"], payload))
        assert len(sent) > 700
        # Every delivery GitHub would send was recorded; run the job on the routed ones in-process.
        from github_app.integration import build_integration
        from jobs.services import build_services

        services = build_services(world.settings)
        try:
            integration = build_integration(world.settings, services)
            svc = integration.github
            ingest = Ingest(svc).run
            rows = await world.deliveries()
            assert set(rows) == {d for d, _, _ in sent}
            routed = 0
            for delivery, event, payload in sent:
                if rows[delivery].outcome != "received":
                    continue
                screened: Screened = svc.events.screen(event, payload, svc.screening)
                assert screened.slim is not None
                outcome = await ingest({}, delivery, screened.name, screened.slim)
                assert outcome and not outcome.startswith("retrying"), (delivery, outcome)
                routed += 1
            assert routed > 0
        finally:
            await services.close()
        # The fake saw only requests valid for GitHub (checked when the world closes).


@PG
async def test_database_down_answers_503_and_queues_nothing(settings: Settings, tmp_path: Path) -> None:
    from web.app import create_app

    async with github_world(settings, tmp_path) as world:
        down = world.settings.model_copy(update={"database_url": "postgresql://handoff:x@127.0.0.1:9/nope"})
        async with LiveServer(create_app(down)) as server, httpx.AsyncClient(base_url=server.url) as client:
            payload = world.payload("issue_comment", "created", comment={"body": "/handoff help", "id": 7})
            response = await world.send(client, "issue_comment", payload)
        assert response.status_code == 503 and response.headers["retry-after"]
        assert await _queued(world.settings) == 0


@PG
async def test_redis_down_answers_503_then_a_redelivery_completes(settings: Settings, tmp_path: Path) -> None:
    from web.app import create_app

    async with github_world(settings, tmp_path) as world:
        down = world.settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
        payload = world.payload("issue_comment", "created", comment={"body": "/handoff help", "id": 8})
        async with LiveServer(create_app(down)) as server, httpx.AsyncClient(base_url=server.url) as client:
            response = await world.send(client, "issue_comment", payload, delivery="r-1")
        assert response.status_code == 503
        # Recorded but never queued: GitHub shows a failure; its redelivery (same GUID) finishes the job.
        assert (await world.deliveries())["r-1"].outcome == "received"
        async with handoff_api(world) as client:
            again = await world.send(client, "issue_comment", payload, delivery="r-1")
        assert again.status_code == 200
        redis = aioredis.from_url(  # type: ignore[no-untyped-call]
            world.settings.redis_url
        )
        try:
            assert await redis.exists(f"arq:job:{job_id(world.settings.handoff_queue_name, 'r-1')}")
        finally:
            await redis.aclose()


@PG
async def test_answers_in_milliseconds(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, handoff_api(world) as client:
        timings: list[float] = []
        for i in range(40):
            payload = world.payload(
                "issue_comment", "created", comment={"body": f"/handoff fix {i}", "id": 100 + i}
            )
            start = time.perf_counter()
            response = await world.send(client, "issue_comment", payload)
            timings.append(time.perf_counter() - start)
            assert response.status_code == 202
    assert statistics.median(timings) < 0.1, timings
