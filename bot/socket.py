"""Socket Mode, for teams without a public URL: ``handoff up`` starts it when SLACK_APP_TOKEN is set.

Envelopes (``events_api``, ``slash_commands``, ``interactive``) take the same path as HTTP
requests: read and screened (:mod:`bot.requests`), recorded and queued (:meth:`SlackIngress.accept`),
then acknowledged on the socket — a slash command's acknowledgement carries the same immediate
answer. Signatures do not apply (the WebSocket itself is authenticated with the ``xapp-`` token);
a retried envelope carries the same ``event_id`` and is recorded once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.requests import Answered, Read, ephemeral, log_answer
from core.errors import ConfigError, DependencyUnavailable

if TYPE_CHECKING:
    from bot.integration import SlackBot

log = logging.getLogger(__name__)
TRY_AGAIN = "Handoff could not take this right now ({what} unavailable). Nothing was started; please try again shortly."


def socket_client(bot: SlackBot) -> SocketModeClient:
    """A Socket Mode client for the bot (not connected yet); needs a running event loop."""
    token = bot.settings.slack_app_token
    if token is None:
        raise ConfigError("SLACK_APP_TOKEN is not set: Socket Mode needs an app-level xapp- token")
    # The notifier's client carries SLACK_API_URL, so apps.connections.open goes there too.
    client = SocketModeClient(app_token=token.get_secret_value(), web_client=bot.notifier.client)

    async def on_request(socket: SocketModeClient, request: SocketModeRequest) -> None:
        try:
            body = await envelope_answer(bot, request.type, request.payload)
        except DependencyUnavailable:
            return  # not acknowledged: Slack sends the event again, as it retries an HTTP 503
        await socket.send_socket_mode_response(SocketModeResponse(request.envelope_id, payload=body))

    client.socket_mode_request_listeners.append(on_request)  # type: ignore[arg-type]
    return client


def read_envelope(bot: SlackBot, kind: str, payload: Any) -> Read:
    """What an envelope's payload is, as :mod:`bot.requests` reads HTTP bodies."""
    reader = bot.ingress.reader
    if kind == "events_api":
        return reader.envelope(payload)
    if kind == "slash_commands":
        return reader.command(payload)
    if kind == "interactive":
        return reader.interaction(payload)
    return Answered(None, f"socket envelope {kind!r} not handled")


async def envelope_answer(bot: SlackBot, kind: str, payload: Any) -> dict[str, Any] | None:
    """Record what needs recording; the body of the acknowledgement.

    Raises :class:`DependencyUnavailable` for an event that could not be recorded (to be retried)."""
    read = read_envelope(bot, kind, payload)
    if isinstance(read, Answered):
        log_answer(log, read, "socket")
        return read.body
    try:
        await bot.ingress.accept(read)
    except DependencyUnavailable as exc:
        log.warning("slack %s (%s): %s", read.delivery_id, read.event, exc)
        if read.event != "slash_command":
            raise
        return ephemeral(TRY_AGAIN.format(what=exc.service))  # never sent again: tell the person
    return read.ack


async def start_socket_mode(bot: SlackBot) -> Callable[[], Awaitable[None]]:
    """Connect ``bot`` to Slack over a WebSocket; return the coroutine function that disconnects."""
    client = socket_client(bot)
    await client.connect()  # type: ignore[no-untyped-call]

    async def stop() -> None:
        """Disconnect."""
        await client.close()  # type: ignore[no-untyped-call]

    return stop
