"""A fake Slack on loopback: the Web API the bot calls, and the Slack side that calls the bot.

:class:`FakeSlack` is a real HTTP server (serve ``fake.app`` with ``tests.support.env.LiveServer``)
answering ``/api/<method>`` the way Slack does — ``{"ok": true, ...}`` or ``{"ok": false,
"error": ...}`` with HTTP 200, 429 with ``Retry-After`` — and it is strict where Slack is: a message
over Slack's limits gets ``invalid_blocks`` / ``msg_too_long``. It records every call, keeps the
messages per channel (threads, edits, reactions), serves ``response_url`` s that expire, and a
Socket Mode WebSocket (``apps.connections.open`` → ``/socket``) that sends envelopes and collects acks.

:class:`SlackSide` plays Slack calling the bot: slash commands (form body), ``event_callback``
envelopes (``app_mention``, ``message.im``, thread replies) and ``block_actions``, built from the
payload shapes in Slack's documentation and signed with the v0 scheme.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-1-test-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0HANDOFF"
BOT_USER = "U0HANDOFF"
BOT_ID = "B0HANDOFF"
APP_ID = "A0HANDOFF"
SCOPES = (
    "app_mentions:read,channels:history,channels:join,chat:write,commands,groups:history,"
    "im:history,reactions:write,usergroups:read,users:read"
)


def units(text: str) -> int:
    """Length in UTF-16 code units, as Slack counts."""
    return len(text.encode("utf-16-le")) // 2


def check_message(text: Any, blocks: Any) -> str | None:
    """The error Slack would answer for this message, or ``None``: the Block Kit limits."""
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if text is not None and units(str(text)) > 40_000:
        return "msg_too_long"
    if blocks is None:
        return None if text else "no_text"
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        kind = block.get("type")
        if len(block.get("block_id", "")) > 255:
            return "invalid_blocks"
        if kind == "section":
            if "text" in block and not 1 <= units(block["text"]["text"]) <= 3000:
                return "invalid_blocks"
            fields = block.get("fields", [])
            if len(fields) > 10 or any(units(f["text"]) > 2000 for f in fields):
                return "invalid_blocks"
        elif kind == "context":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= 10 or any(units(e.get("text", "")) > 3000 for e in elements):
                return "invalid_blocks"
        elif kind == "header":
            if units(block["text"]["text"]) > 150:
                return "invalid_blocks"
        elif kind == "actions":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= 25:
                return "invalid_blocks"
            for e in elements:
                if (
                    units(e["text"]["text"]) > 75
                    or len(e.get("value", "")) > 2000
                    or len(e.get("url", "")) > 3000
                ):
                    return "invalid_blocks"
                if len(e.get("action_id", "")) > 255:
                    return "invalid_blocks"
        elif kind not in ("divider", "image", "rich_text"):
            return "invalid_blocks"
    return None


@dataclass
class Call:
    """One Web API call as the fake received it."""

    method: str
    args: dict[str, Any]
    status: int
    response: dict[str, Any]
    at: float


@dataclass
class Message:
    """A message in a channel, as Slack would hold it."""

    channel: str
    ts: str
    user: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    broadcast: bool = False
    edits: int = 0
    reactions: list[str] = field(default_factory=list)


@dataclass
class Fault:
    """Answer the next ``times`` calls of ``method`` badly."""

    method: str
    times: int = 1
    status: int = 200
    error: str = "internal_error"
    retry_after: float | None = None


@dataclass
class Hook:
    """A ``response_url``."""

    id: str
    expired: bool = False
    uses: int = 0
    posts: list[dict[str, Any]] = field(default_factory=list)


class FakeSlack:
    """The Web API, response URLs and the Socket Mode endpoint."""

    def __init__(self) -> None:
        self.url = ""  # set by :meth:`bind` once the server has a port
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.not_in_channel: set[str] = set()
        self.usergroups: dict[str, list[str]] = {}
        # user id -> display name (users.info); unknown ids answer user_not_found.
        self.users: dict[str, str] = {}
        self.hooks: dict[str, Hook] = {}
        self.sockets: list[WebSocket] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.violations: list[str] = []
        self._seq = itertools.count(1)
        self._base = int(time.time())
        self.app = self._build()

    def bind(self, url: str) -> None:
        """Tell the fake its own address (for response URLs and the WebSocket URL)."""
        self.url = url

    @property
    def api_url(self) -> str:
        """What SLACK_API_URL should be."""
        return f"{self.url}/api/"

    # -- test controls --------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        *,
        times: int = 1,
        status: int = 200,
        error: str = "internal_error",
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error (429 with ``retry_after``)."""
        self.faults.append(Fault(method, times, status, error, retry_after))

    def next_ts(self) -> str:
        """A fresh message timestamp, increasing like Slack's."""
        return f"{self._base}.{next(self._seq):06d}"

    def user_message(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> Message:
        """A message a person posted (so bot replies can thread under it)."""
        message = Message(channel, self.next_ts(), user, text, thread_ts=thread_ts)
        self.messages[(channel, message.ts)] = message
        return message

    def response_url(self, *, expired: bool = False) -> str:
        """A new ``response_url`` (optionally already expired)."""
        hook = Hook(uuid.uuid4().hex, expired=expired)
        self.hooks[hook.id] = hook
        return f"{self.url}/response/{hook.id}"

    def of(self, method: str) -> list[Call]:
        """The calls of one method, in order."""
        return [c for c in self.calls if c.method == method]

    def bot_messages(self, channel: str | None = None) -> list[Message]:
        """Messages the bot posted (in ``channel``), oldest first."""
        found = [m for m in self.messages.values() if m.user == BOT_USER]
        return sorted((m for m in found if channel in (None, m.channel)), key=lambda m: m.ts)

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The replies in a thread, oldest first."""
        return sorted(
            (m for m in self.messages.values() if m.channel == channel and m.thread_ts == ts and m.ts != ts),
            key=lambda m: m.ts,
        )

    async def send_envelope(self, envelope: dict[str, Any]) -> None:
        """Push a Socket Mode envelope to every connected client."""
        for ws in list(self.sockets):
            await ws.send_text(json.dumps(envelope))

    # -- the server -----------------------------------------------------------------------------

    def _take_fault(self, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/api/{method}", methods=["GET", "POST"])
        async def api(method: str, request: Request) -> Response:
            args: dict[str, Any] = dict(request.query_params)
            raw = await request.body()
            if request.headers.get("content-type", "").startswith("application/json") and raw:
                args.update(json.loads(raw))
            elif raw:
                args.update(dict(parse_qsl(raw.decode())))
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            status, body, headers = self._answer(method, token, args)
            self.calls.append(Call(method, args, status, body, time.monotonic()))
            return JSONResponse(body, status_code=status, headers=headers)

        @app.post("/response/{hook_id}")
        async def respond(hook_id: str, request: Request) -> Response:
            hook = self.hooks.get(hook_id)
            if hook is None or hook.expired:
                return PlainTextResponse("expired_url", status_code=404)
            if hook.uses >= 5:
                return PlainTextResponse("used_url", status_code=404)
            payload = await request.json()
            error = check_message(payload.get("text"), payload.get("blocks"))
            if error:
                return PlainTextResponse(error, status_code=400)
            hook.uses += 1
            hook.posts.append(payload)
            return PlainTextResponse("ok")

        @app.websocket("/socket")
        async def socket(ws: WebSocket) -> None:
            await ws.accept()
            self.sockets.append(ws)
            await ws.send_text(
                json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": APP_ID}})
            )
            try:
                while True:
                    ack = json.loads(await ws.receive_text())
                    if "envelope_id" in ack:
                        self.acks[ack["envelope_id"]] = ack
            except WebSocketDisconnect:
                pass
            finally:
                self.sockets.remove(ws)

        return app

    def _answer(
        self, method: str, token: str, args: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        fault = self._take_fault(method)
        if fault is not None:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            error = "ratelimited" if fault.status == 429 else fault.error
            return fault.status, {"ok": False, "error": error}, headers
        if method == "apps.connections.open":
            if token != APP_TOKEN:
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            ws = self.url.replace("http://", "ws://")
            return 200, {"ok": True, "url": f"{ws}/socket?ticket={uuid.uuid4().hex}"}, {}
        if token != BOT_TOKEN:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        body, headers = handler(args)
        return 200, body, headers

    # -- Web API methods ------------------------------------------------------------------------

    def _auth_test(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        body = {
            "ok": True,
            "url": "https://handoff-test.slack.com/",
            "team": "Handoff Test",
            "user": "handoff",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }
        return body, {"x-oauth-scopes": SCOPES}

    def _post(
        self, args: dict[str, Any], *, ephemeral: bool = False
    ) -> tuple[dict[str, Any], dict[str, str]]:
        channel = str(args.get("channel", ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}, {}
        if channel in self.not_in_channel:
            return {"ok": False, "error": "not_in_channel"}, {}
        error = check_message(args.get("text"), args.get("blocks"))
        if error:
            return {"ok": False, "error": error}, {}
        if channel.startswith("U"):  # posting to a user id opens the app's DM with them
            channel = "D" + channel[1:]
        blocks = args.get("blocks")
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        thread_ts = args.get("thread_ts") or None
        if thread_ts:
            parent = self.messages.get((channel, thread_ts))
            if parent is None or (parent.thread_ts and parent.thread_ts != parent.ts):
                self.violations.append(f"thread_ts {thread_ts} in {channel} is not a parent message")
        ts = self.next_ts()
        if ephemeral:
            self.ephemerals.append({**args, "blocks": blocks, "message_ts": ts})
            return {"ok": True, "message_ts": ts}, {}
        broadcast = str(args.get("reply_broadcast", "")).lower() in ("true", "1")
        message = Message(channel, ts, BOT_USER, str(args.get("text") or ""), blocks, thread_ts, broadcast)
        self.messages[(channel, ts)] = message
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "message": {
                "type": "message",
                "user": BOT_USER,
                "bot_id": BOT_ID,
                "text": message.text,
                "ts": ts,
            },
        }, {}

    def _chat_postMessage(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        return self._post(args)

    def _chat_postEphemeral(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}, {}
        return self._post(args, ephemeral=True)

    def _chat_update(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        message = self.messages.get((str(args.get("channel")), str(args.get("ts"))))
        if message is None:
            return {"ok": False, "error": "message_not_found"}, {}
        if message.user != BOT_USER:
            return {"ok": False, "error": "cant_update_message"}, {}
        error = check_message(args.get("text"), args.get("blocks"))
        if error:
            return {"ok": False, "error": error}, {}
        blocks = args.get("blocks")
        message.blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        message.text = str(args.get("text") or "")
        message.edits += 1
        return {"ok": True, "channel": message.channel, "ts": message.ts, "text": message.text}, {}

    def _reactions_add(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        message = self.messages.get((str(args.get("channel")), str(args.get("timestamp"))))
        if message is None:
            return {"ok": False, "error": "message_not_found"}, {}
        if args.get("name") in message.reactions:
            return {"ok": False, "error": "already_reacted"}, {}
        message.reactions.append(str(args.get("name")))
        return {"ok": True}, {}

    def _conversations_join(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        channel = str(args.get("channel"))
        self.not_in_channel.discard(channel)
        return {"ok": True, "channel": {"id": channel, "is_member": True}}, {}

    def _users_info(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        user = str(args.get("user"))
        if user not in self.users:
            return {"ok": False, "error": "user_not_found"}, {}
        name = self.users[user]
        profile = {"display_name": name, "real_name": name.title(), "display_name_normalized": name}
        return {
            "ok": True,
            "user": {"id": user, "team_id": TEAM, "name": name.lower(), "profile": profile},
        }, {}

    def _usergroups_users_list(self, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        group = str(args.get("usergroup"))
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}, {}
        return {"ok": True, "users": self.usergroups[group]}, {}


# ---------------------------------------------------------------------------------- Slack → bot


def as_slack_sends(text: str) -> str:
    """What Slack puts on the wire for typed ``text``: ``&``, ``<`` and ``>`` HTML-escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def sign(body: bytes, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The v0 signature headers for ``body``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class SlackSide:
    """Slack calling the bot's ``/slack/events`` with signed requests."""

    def __init__(self, fake: FakeSlack, events_url: str, secret: str = SIGNING_SECRET) -> None:
        self.fake = fake
        self.events_url = events_url
        self.secret = secret
        self.client = httpx.AsyncClient(timeout=10)
        self._n = itertools.count(1)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def post(
        self,
        body: bytes,
        content_type: str,
        *,
        headers: dict[str, str] | None = None,
        timestamp: int | None = None,
        tamper: bool = False,
    ) -> httpx.Response:
        """POST ``body`` signed (``tamper`` changes a byte after signing)."""
        signed = sign(body, self.secret, timestamp)
        if tamper:
            body = body.replace(b"a", b"b", 1)
        return await self.client.post(
            self.events_url, content=body, headers={"Content-Type": content_type, **signed, **(headers or {})}
        )

    # -- payloads -------------------------------------------------------------------------------

    def slash_body(
        self,
        text: str,
        *,
        user: str = "U01ALICE",
        channel: str = "C0API",
        response_url: str | None = None,
        markup: bool = False,
    ) -> dict[str, str]:
        """A slash command's form fields (https://api.slack.com/interactivity/slash-commands).

        ``text`` is what the person typed, escaped as Slack escapes it; ``markup``: ``text`` is
        already on the wire form (mentions, links)."""
        n = next(self._n)
        return {
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "team_id": TEAM,
            "team_domain": "handoff-test",
            "channel_id": channel,
            "channel_name": "api",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/handoff",
            "text": text if markup else as_slack_sends(text),
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url or self.fake.response_url(),
            "trigger_id": f"{n}.{int(time.time())}.{uuid.uuid4().hex[:16]}",
        }

    async def slash(self, text: str, **kwargs: Any) -> httpx.Response:
        """Send ``/handoff <text>``."""
        body = urlencode(self.slash_body(text, **kwargs)).encode()
        return await self.post(body, "application/x-www-form-urlencoded")

    def envelope(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """An ``event_callback`` (https://api.slack.com/apis/events-api#callback-field)."""
        return {
            "token": "XXYYZZ",
            "team_id": TEAM,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": TEAM,
                    "user_id": BOT_USER,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    def mention(
        self,
        text: str,
        *,
        user: str = "U01ALICE",
        channel: str = "C0API",
        thread_ts: str | None = None,
        markup: bool = False,
    ) -> dict[str, Any]:
        """An ``app_mention`` event; the message is also posted in the fake channel."""
        full = f"<@{BOT_USER}> {text if markup else as_slack_sends(text)}"
        message = self.fake.user_message(channel, user, full, thread_ts)
        return {
            "type": "app_mention",
            "user": user,
            "text": full,
            "ts": message.ts,
            "channel": channel,
            "event_ts": message.ts,
            "team": TEAM,
            "client_msg_id": str(uuid.uuid4()),
            **({"thread_ts": thread_ts} if thread_ts else {}),
        }

    def message(
        self,
        text: str,
        *,
        user: str = "U01ALICE",
        channel: str = "D0ALICE",
        channel_type: str = "im",
        thread_ts: str | None = None,
        markup: bool = False,
    ) -> dict[str, Any]:
        """A ``message`` event (``message.im``, or ``message.channels`` for a thread reply)."""
        text = text if markup else as_slack_sends(text)
        message = self.fake.user_message(channel, user, text, thread_ts)
        event = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": message.ts,
            "event_ts": message.ts,
            "channel_type": channel_type,
            "team": TEAM,
            "client_msg_id": str(uuid.uuid4()),
        }
        if thread_ts:
            event |= {"thread_ts": thread_ts, "parent_user_id": BOT_USER}
        return event

    async def event(
        self, event: dict[str, Any], *, event_id: str | None = None, retry_num: int | None = None
    ) -> httpx.Response:
        """Deliver an event (``retry_num`` adds Slack's retry headers)."""
        body = json.dumps(self.envelope(event, event_id)).encode()
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.post(body, "application/json", headers=headers)

    def action_payload(
        self,
        action_id: str,
        value: str,
        *,
        user: str = "U01ALICE",
        channel: str = "C0API",
        message_ts: str = "",
        url: str | None = None,
    ) -> dict[str, Any]:
        """A ``block_actions`` payload (https://api.slack.com/reference/interaction-payloads/block-actions)."""
        action = {
            "action_id": action_id,
            "block_id": f"handoff:{value}",
            "value": value,
            "type": "button",
            "text": {"type": "plain_text", "text": action_id, "emoji": True},
            "action_ts": f"{time.time():.6f}",
        }
        if url:
            action["url"] = url
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
            "api_app_id": APP_ID,
            "token": "9s8d9as89d8as9d8as989",
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": f"{next(self._n)}.{int(time.time())}.{uuid.uuid4().hex[:16]}",
            "team": {"id": TEAM, "domain": "handoff-test"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "api"},
            "message": {"type": "message", "user": BOT_USER, "ts": message_ts, "text": "status"},
            "state": {"values": {}},
            "response_url": self.fake.response_url(),
            "actions": [action],
        }

    async def click(self, action_id: str, value: str, **kwargs: Any) -> httpx.Response:
        """Press a button."""
        payload = self.action_payload(action_id, value, **kwargs)
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return await self.post(body, "application/x-www-form-urlencoded")


async def wait_for_socket(fake: FakeSlack, timeout: float = 5.0) -> None:
    """Until a Socket Mode client is connected."""
    deadline = time.monotonic() + timeout
    while not fake.sockets:
        if time.monotonic() > deadline:
            raise AssertionError("no socket mode client connected")
        await asyncio.sleep(0.02)
