"""Acknowledgement first: a new request's 👀 never waits behind other tasks' progress writes.

The latency target lives in ``bench/ack_latency.py``; here, orders and budgets: the token buckets,
the sender's lanes (an acknowledgement overtakes writes held by pacing, and a pass never waits for
a slow write), and the GitHub client's gate (an acknowledgement skips the gap between writes but
never runs beside another write of the installation).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.models import Outbox
from core.outbox import Delivered, DeliveryContext, RateRule, is_ack
from core.settings import Settings
from github_app.client import GitHubClient, ack_lane
from jobs.outbox import OutboxSender
from jobs.pacing import Pacing
from tests.fakes.github_api import FakeGitHub
from tests.support.env import LiveServer
from tests.support.github import APP_ID, INSTALLATION, REPO, rsa_keys
from web.integrations import worker_services


def test_buckets_burst_refill_reserve_and_hold() -> None:
    pacing = Pacing()
    budget = RateRule("budget", 1.0, burst=4)
    kept = replace(budget, reserve=2)  # other writes leave the last 2 tokens to acknowledgements
    assert pacing.ready([kept], 0.0)
    pacing.take([kept], 0.0)
    pacing.take([kept], 0.0)
    assert not pacing.ready([kept], 0.0)  # 2 left: kept back...
    assert pacing.ready([budget], 0.0)  # ... for acknowledgements, which may take them
    pacing.take([budget], 0.0)
    pacing.take([budget], 0.0)
    assert not pacing.ready([budget], 0.5)
    assert pacing.ready([budget], 1.0)  # one token a second
    assert not pacing.ready([kept], 2.5) and pacing.ready([kept], 3.0)
    pacing.hold([budget], until=10.0)  # a Retry-After holds the whole bucket
    assert not pacing.ready([budget], 9.9) and pacing.ready([budget], 10.0)
    assert pacing.ready([RateRule("fresh", 5.0)], 0.0)


class Lanes:
    """A notifier shaped like GitHub's: one installation, a shared budget, slow normal writes."""

    channel = "lanes"

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []  # (event, key)

    def rate_rules(self, row: Outbox) -> list[RateRule]:
        budget = RateRule("inst:budget", 1.0, burst=4)
        if is_ack(row):
            return [budget]
        return [RateRule("inst", 1.0), replace(budget, reserve=2)]

    async def deliver(self, row: Outbox, ctx: DeliveryContext) -> Delivered:
        self.log.append(("start", row.key))
        if not is_ack(row):
            await asyncio.sleep(0.5)  # a write that takes a while (pacing in the client, a slow API)
        self.log.append(("end", row.key))
        return Delivered()


async def test_an_acknowledgement_overtakes_other_tasks_progress(sqlite_settings: Settings) -> None:
    wc = worker_services(sqlite_settings)
    notifier = Lanes()
    sender = OutboxSender(wc.sessions, [notifier])
    async with wc.sessions.begin() as session:
        session.add_all(
            Outbox(channel="lanes", key=f"progress:{n}", kind="upsert", payload={}) for n in range(5)
        )
    first = await sender.dispatch()  # one progress write goes (the lane allows one a second)
    async with wc.sessions.begin() as session:
        session.add(Outbox(channel="lanes", key="eyes", kind="append", payload={"ack": True}))
    second = await sender.dispatch()  # the 👀 goes at once, while that write is still in flight
    await asyncio.gather(*first, *second)
    await wc.close()
    assert [key for event, key in notifier.log if event == "end"][:2] == ["eyes", "progress:0"]
    assert len(first) == 5 and [e for e in notifier.log if e[0] == "start"][:2] == [
        ("start", "progress:0"),
        ("start", "eyes"),
    ]


async def test_the_client_lets_an_acknowledgement_skip_the_gap_but_not_the_line(tmp_path: Path) -> None:
    private, public = rsa_keys()
    fake = FakeGitHub(APP_ID, public)
    fake.installations.add(INSTALLATION)
    async with LiveServer(fake.app) as server:
        client = GitHubClient(
            app_id=str(APP_ID), private_key=private, api_url=server.url, write_interval_s=2.0
        )
        done: list[str] = []

        async def react(name: str, ack: bool) -> None:
            async def post(gh: Any) -> Any:
                return await gh.rest.reactions.async_create_for_issue("acme", "widgets", 1, content="eyes")

            with ack_lane(ack):
                await client.call(INSTALLATION, REPO, post, permissions={"issues": "write"}, write=True)
            done.append(name)

        await react("first", ack=False)
        # Both start inside the 2 s gap after the first write: the acknowledgement goes at once,
        # the other write waits out the gap.
        await asyncio.gather(react("progress", ack=False), react("eyes", ack=True))
    assert done == ["first", "eyes", "progress"]
    assert len([r for r in fake.requests if r.op == "reactions/create-for-issue"]) == 3
