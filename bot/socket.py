"""Socket Mode, for teams without a public URL: ``handoff up`` starts it when SLACK_APP_TOKEN is set.

The same bolt app handles the envelopes (``events_api``, ``slash_commands``, ``interactive``);
signature checks do not apply (the WebSocket itself is authenticated with the ``xapp-`` token),
and ``retry_attempt``/``retry_reason`` become the usual retry headers. Deduplication by
``event_id`` works the same, since it happens in the listeners.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

from core.errors import ConfigError

if TYPE_CHECKING:
    from bot.integration import SlackBot


def socket_handler(bot: SlackBot) -> AsyncSocketModeHandler:
    """A Socket Mode handler for the bot (not connected yet); needs a running event loop."""
    token = bot.settings.slack_app_token
    if token is None:
        raise ConfigError("SLACK_APP_TOKEN is not set: Socket Mode needs an app-level xapp- token")
    # The bolt app's client carries SLACK_API_URL, so apps.connections.open goes there too.
    return AsyncSocketModeHandler(bot.app, token.get_secret_value(), web_client=bot.app.client)


async def start_socket_mode(bot: SlackBot) -> Callable[[], Awaitable[None]]:
    """Connect ``bot`` to Slack over a WebSocket; return the coroutine function that disconnects."""
    handler = socket_handler(bot)
    await handler.connect_async()  # type: ignore[no-untyped-call]

    async def stop() -> None:
        """Disconnect, then let work past its ack budget finish."""
        await handler.close_async()  # type: ignore[no-untyped-call]
        await bot.budget.drain()

    return stop
