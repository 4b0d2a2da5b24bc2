"""The Slack Web API client, pointed at ``SLACK_API_URL`` (tests point it at a local fake)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from core.settings import Settings


def make_client(settings: Settings, token: str | None = None) -> AsyncWebClient:
    """A Web API client with ``token`` (default: ``SLACK_BOT_TOKEN``) on ``SLACK_API_URL``."""
    if token is None and settings.slack_bot_token is not None:
        token = settings.slack_bot_token.get_secret_value()
    base = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    return AsyncWebClient(token=token, base_url=base, timeout=10)
