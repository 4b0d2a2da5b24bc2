"""Delivers Slack outbox rows: status messages, thread replies, reactions, ephemeral answers.

Rows carry one of :mod:`bot.operations`:

* ``status`` — post the task's status message once (remembering its ts), then ``chat.update`` it.
  Rendered from the database at send time (:mod:`core.snapshot`).
* ``reply`` — a thread reply (``reply_broadcast`` for failures), optionally with the log tail.
* ``react`` — a reaction on the message that asked.
* ``ephemeral`` — ``chat.postEphemeral``; a DM when the person cannot get one in that channel.
* ``respond`` — a ``response_url`` answer; once that URL has expired (30 min, 5 uses), a DM by
  ``chat.postMessage`` instead.

Slack errors map onto the sender's vocabulary: ``ratelimited``/429 → :class:`RetryLater` with
``Retry-After``; 5xx and network errors → :class:`RetryLater`; anything else → :class:`GiveUp`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import messages
from bot.blocks import fit_message, sections
from bot.operations import CHANNEL, OPERATIONS, Ephemeral, React, Respond, Status, ThreadReply
from bot.reporter import status_key
from bot.store import Store
from core.models import Outbox
from core.outbox import Delivered, DeliveryContext, GiveUp, RateRule, RetryLater
from core.redact import Redactor
from core.snapshot import load_snapshot

log = logging.getLogger(__name__)

# (task id, channel, ts of the status message heading its new thread) -> None.
ThreadStarted = Callable[[str, str, str], Awaitable[None]]

# Slack: chat.postMessage about 1 per second per channel; chat.update is Tier 3 (~50 per minute),
# per workspace, so one bucket paces every status message together.
MESSAGE_INTERVAL_S = 1.0
CHANNEL_INTERVAL_S = 1.0
UPDATE_INTERVAL_S = 1.2
REACTION_INTERVAL_S = 1.2  # reactions.add: Tier 3
EPHEMERAL_INTERVAL_S = 0.6  # chat.postEphemeral: Tier 4
RESPONSE_URL_TTL_S = 30 * 60 - 60
# The status message's "Latest output".
STATUS_LOG_LINES = 5
_RETRYABLE = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
_NO_ACCESS = frozenset({"not_in_channel", "channel_not_found", "user_not_in_channel", "is_archived"})


class SlackNotifier:
    """A :class:`core.outbox.Notifier` for the ``slack`` channel."""

    channel = CHANNEL

    def __init__(
        self,
        client: AsyncWebClient,
        store: Store,
        public_url: str,
        *,
        allowed_hosts: frozenset[str] = frozenset(),
        before_send: Callable[[], Awaitable[None]] | None = None,
        redactor: Redactor | None = None,
        message_interval_s: float = MESSAGE_INTERVAL_S,
        on_thread: ThreadStarted | None = None,
    ) -> None:
        self.client = client
        self.message_interval_s = message_interval_s
        self.store = store
        self.public_url = public_url
        # response_url must point at Slack (or the configured API host in tests): never elsewhere.
        self.allowed_hosts = allowed_hosts
        self.before_send = before_send
        self.redactor = redactor or Redactor()
        self.on_thread = on_thread

    def rate_rules(self, row: Outbox) -> list[RateRule]:
        """One edit per second per message, one post per second per channel, Tier 3 for updates."""
        op = OPERATIONS.parse_or_none(row)
        if isinstance(op, Status) and op.ack and op.channel:
            # The first post of a status message acknowledges a request: it is a post to the
            # channel, not one of the workspace's chat.update calls every running task shares.
            return [
                RateRule(f"slack:msg:{row.key}", self.message_interval_s, per_object=True),
                RateRule(f"slack:channel:{op.channel}", CHANNEL_INTERVAL_S),
            ]
        if isinstance(op, Status):
            return [
                RateRule(f"slack:msg:{row.key}", self.message_interval_s, per_object=True),
                RateRule("slack:update", UPDATE_INTERVAL_S),
            ]
        if isinstance(op, ThreadReply) and op.channel:
            return [RateRule(f"slack:channel:{op.channel}", CHANNEL_INTERVAL_S)]
        # Reactions and ephemeral answers do not count against a channel's posting rate.
        if isinstance(op, React):
            return [RateRule("slack:reactions", REACTION_INTERVAL_S)]
        if isinstance(op, Ephemeral):
            return [RateRule("slack:ephemeral", EPHEMERAL_INTERVAL_S)]
        return []

    async def deliver(self, row: Outbox, ctx: DeliveryContext) -> Delivered:
        """Make Slack match ``row``; raise :class:`RetryLater` or :class:`GiveUp`."""
        op = OPERATIONS.parse(row)
        if self.before_send is not None:
            await self.before_send()
        try:
            if isinstance(op, Status):
                return await self._status(op, ctx, row)
            if isinstance(op, ThreadReply):
                return await self._reply(op, ctx)
            if isinstance(op, React):
                return await self._react(op)
            if isinstance(op, Ephemeral):
                return await self._ephemeral(op)
            return await self._respond(op)
        except SlackApiError as exc:
            raise classify(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(f"slack unreachable: {exc.__class__.__name__}: {exc}") from exc

    # -- ops ------------------------------------------------------------------------------------

    async def _status(self, op: Status, ctx: DeliveryContext, row: Outbox) -> Delivered:
        view = await load_snapshot(self.store.sessions, op.task_id, log_lines=STATUS_LOG_LINES)
        if view is None:
            raise GiveUp(f"task {op.task_id} no longer exists")
        text, blocks = self._scrub(*messages.status_message(view, self.public_url))
        ref = await ctx.recall(row.key)
        if ref is not None:
            try:
                await self.client.chat_update(channel=ref["channel"], ts=ref["ts"], text=text, blocks=blocks)
                return Delivered(ref=ref)
            except SlackApiError as exc:
                if _error(exc) not in _GONE:
                    raise
                # Deleted or no longer editable: post a fresh status message instead.
                log.info("status message of %s is gone (%s); posting a new one", op.task_id, _error(exc))
        resp = await self._post(op.channel, text, blocks, thread_ts=op.thread_ts, dm_user=op.user)
        ref = {"channel": resp["channel"], "ts": resp["ts"]}
        await ctx.remember(row.key, ref)
        if not op.thread_ts:
            # The status message starts the thread: replies in it are follow-ups for this task.
            await self.store.index_thread(ref["channel"], ref["ts"], op.task_id)
            if self.on_thread is not None:
                await self.on_thread(op.task_id, ref["channel"], ref["ts"])
        return Delivered(ref=ref)

    async def _reply(self, op: ThreadReply, ctx: DeliveryContext) -> Delivered:
        channel, thread_ts = op.channel, op.thread_ts
        if op.after_status or not thread_ts:
            # The status message heads the thread (or is its parent, for slash commands and
            # announcements): a milestone waits for it, so it never lands above it.
            status = await ctx.recall(status_key(str(op.task_id)))
            if status is None:
                raise RetryLater("the status message is not posted yet", after_s=0.5)
            if not thread_ts:
                channel, thread_ts = status["channel"], status["ts"]
        tail: list[str] = []
        if op.log_tail and op.task_id:
            snap = await load_snapshot(self.store.sessions, op.task_id, log_lines=op.log_tail)
            tail = snap.log_tail if snap is not None else []
        text, blocks = self._scrub(*messages.reply_message(op.text, tail))
        resp = await self.client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            text=text,
            blocks=blocks,
            reply_broadcast=op.broadcast,
        )
        return Delivered(ref={"channel": resp["channel"], "ts": resp["ts"]})

    async def _react(self, op: React) -> Delivered:
        try:
            await self.client.reactions_add(channel=op.channel, timestamp=op.ts, name=op.name)
        except SlackApiError as exc:
            if _error(exc) != "already_reacted":  # a retry after a lost answer
                raise
        return Delivered()

    async def _ephemeral(self, op: Ephemeral) -> Delivered:
        text, blocks = self._scrub(op.text, sections(op.text, 10))
        try:
            resp = await self.client.chat_postEphemeral(
                channel=op.channel, user=op.user, text=text, blocks=blocks, thread_ts=op.thread_ts
            )
            return Delivered(ref={"message_ts": resp.get("message_ts")})
        except SlackApiError as exc:
            if _error(exc) not in _NO_ACCESS:
                raise
        return await self._dm(op.user, text, blocks)

    async def _respond(self, op: Respond) -> Delivered:
        text, blocks = self._scrub(op.text, sections(op.text, 10))
        url = op.response_url or ""
        fresh = time.time() - op.issued_at < RESPONSE_URL_TTL_S
        if url and fresh and self._allowed(url):
            hook = AsyncWebhookClient(url, timeout=10)
            resp = await hook.send(
                text=text,
                blocks=blocks,
                response_type="ephemeral" if op.private else "in_channel",
                replace_original=False,
            )
            if resp.status_code == 200:
                return Delivered()
            if resp.status_code == 429 or resp.status_code >= 500:
                raise RetryLater(f"response_url answered {resp.status_code}", after_s=_after(resp.headers))
            log.info("response_url answered %s (%s); falling back to a message", resp.status_code, resp.body)
        # Expired, used up or refused: say it with chat.postMessage instead.
        if op.private or not op.channel:
            return await self._dm(op.user, text, blocks)
        resp2 = await self.client.chat_postMessage(channel=op.channel, text=text, blocks=blocks)
        return Delivered(ref={"channel": resp2["channel"], "ts": resp2["ts"]})

    # -- helpers --------------------------------------------------------------------------------

    def _scrub(self, text: str, blocks: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        """Mask secrets in everything about to be posted, then re-check the limits (a mask may be
        longer than what it hides). Events are redacted when stored; instructions and reasons are not."""
        cleaned: list[dict[str, Any]] = self.redactor.data(blocks)
        return fit_message(self.redactor(text), cleaned)

    def _allowed(self, url: str) -> bool:
        parsed = urlparse(url)
        host = parsed.hostname or ""
        if host in self.allowed_hosts:
            return True
        return parsed.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com"))

    async def _post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]],
        *,
        thread_ts: str | None,
        dm_user: str | None,
    ) -> Any:
        """``chat.postMessage``; joins a public channel first if needed, else falls back to a DM."""
        try:
            return await self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            error = _error(exc)
            if error not in _NO_ACCESS:
                raise
        if error == "not_in_channel":
            try:
                await self.client.conversations_join(channel=channel)
                return await self.client.chat_postMessage(
                    channel=channel, thread_ts=thread_ts, text=text, blocks=blocks
                )
            except SlackApiError as exc:
                if _error(exc) not in _NO_ACCESS and _error(exc) != "method_not_supported_for_channel_type":
                    raise
        if dm_user and not thread_ts:
            log.info("cannot post in %s (%s); using a DM with %s", channel, error, dm_user)
            return await self.client.chat_postMessage(channel=dm_user, text=text, blocks=blocks)
        raise GiveUp(f"cannot post in {channel}: {error}")

    async def _dm(self, user: str, text: str, blocks: list[dict[str, Any]]) -> Delivered:
        resp = await self.client.chat_postMessage(channel=user, text=text, blocks=blocks)
        return Delivered(ref={"channel": resp["channel"], "ts": resp["ts"]})


def _error(exc: SlackApiError) -> str:
    data = exc.response.data if exc.response is not None else None
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
        if isinstance(value, list):
            value = value[0]
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def classify(exc: SlackApiError) -> RetryLater | GiveUp:
    """Map a Slack API error onto retry-or-give-up."""
    status = getattr(exc.response, "status_code", 0) or 0
    error = _error(exc)
    if status == 429 or error == "ratelimited":
        # Slack's limits are per method and workspace: pause every row sharing the bucket.
        return RetryLater(
            f"slack rate limited ({error or status})",
            after_s=_after(exc.response.headers) or 1.0,
            scope="bucket",
        )
    if status >= 500 or error in _RETRYABLE:
        return RetryLater(f"slack error {status} {error}")
    return GiveUp(f"slack refused: {error or status}")
