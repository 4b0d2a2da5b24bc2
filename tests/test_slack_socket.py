"""Socket Mode: the real slack_sdk client connects (apps.connections.open → WebSocket) to the fake,
which sends envelopes; each is read, recorded and queued like an HTTP request, then acknowledged.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from bot.integration import SlackIntegration
from bot.messages import CANCEL
from bot.socket import start_socket_mode
from core.settings import Settings
from tests.fakes.slack_api import FakeSlack, wait_for_socket
from tests.support.slack import ALICE, BOUND, Rig, slack_rig


async def _ack(fake: FakeSlack, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while envelope_id not in fake.acks:
        assert time.monotonic() < deadline, f"envelope {envelope_id} was not acknowledged"
        await asyncio.sleep(0.02)
    return fake.acks[envelope_id]


async def _send(rig: Rig, kind: str, payload: dict[str, Any], **extra: Any) -> str:
    envelope_id = str(uuid.uuid4())
    await rig.fake.send_envelope(
        {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            **extra,
        }
    )
    return envelope_id


async def test_socket_mode_envelopes(settings: Settings, tmp_path: Path) -> None:
    async with slack_rig(settings, tmp_path) as rig:
        integration = next(i for i in rig.services.integrations if isinstance(i, SlackIntegration))
        stop = await start_socket_mode(integration.bot)
        try:
            await wait_for_socket(rig.fake)
            assert rig.fake.of("apps.connections.open")
            # An event, then Slack's retry of it (same event_id, retry_attempt 1): processed once.
            event = rig.slack.envelope(rig.slack.mention("echo hi", user=ALICE, channel=BOUND), "Ev0SOCKET01")
            first = await _send(rig, "events_api", event, retry_attempt=0, retry_reason="")
            assert await _ack(rig.fake, first) == {"envelope_id": first}
            retry = await _send(rig, "events_api", event, retry_attempt=1, retry_reason="timeout")
            await _ack(rig.fake, retry)
            await rig.handled()
            assert len(await rig.tasks()) == 1
            assert [d.id for d in await rig.deliveries()] == ["ev:Ev0SOCKET01"]
            # A slash command: the acknowledgement carries the immediate answer.
            body = rig.slack.slash_body("echo two", user=ALICE, channel=BOUND)
            ack = await _ack(rig.fake, await _send(rig, "slash_commands", body))
            assert "status follows" in ack["payload"]["text"]
            task_id = (await rig.task_of(f"cmd:{body['trigger_id']}")).id
            # A button: Cancel the queued task.
            click = await _send(rig, "interactive", rig.slack.action_payload(CANCEL, task_id, user=ALICE))
            await _ack(rig.fake, click)
            await rig.handled()
            assert (await rig.task(task_id)).state == "cancelled"
            # Help is answered on the socket at once; an event Handoff does not handle is acked too.
            help_ = await _send(rig, "slash_commands", rig.slack.slash_body("help", user=ALICE))
            assert "Handoff commands" in (await _ack(rig.fake, help_))["payload"]["text"]
            home = rig.slack.envelope({"type": "app_home_opened", "user": ALICE, "tab": "home"})
            assert await _ack(rig.fake, await _send(rig, "events_api", home)) != {}
            # Nothing was signed: Socket Mode needs no signing secret, the WebSocket is the trust.
            assert len(await rig.tasks()) == 2
        finally:
            await stop()
        assert rig.fake.sockets == []
