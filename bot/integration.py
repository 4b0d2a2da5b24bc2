"""What the composition root plugs in: ``build_integration(settings, services) -> Integration``.

The router exposes ``POST /slack/events`` (events, slash commands and interactivity share one
URL). The signature is checked on the raw body *before* bolt parses anything, so a forged or
stale request is answered 401 without being parsed, logged or acted on (bolt's own check would
log the body of a bad request), and a body over 1 MiB is refused (413) before it is buffered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from slack_bolt.adapter.starlette.async_handler import to_async_bolt_request, to_starlette_response
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier

from bot import commands
from bot.access import Access
from bot.app import AckBudget, build_app, make_client
from bot.config import SlackConfig, parse_slack_config
from bot.intake import Intake
from bot.notifier import SlackNotifier
from bot.people import Names
from bot.reporter import SlackReporter
from bot.store import Store
from core.bodies import read_capped
from core.ports import Integration
from core.redact import Redactor
from core.services import Services
from core.settings import Settings

# Slack payloads are a few kB; refuse to buffer anything absurd before the signature check.
MAX_BODY = 1024 * 1024


@dataclass
class SlackBot:
    """Everything the Slack integration built, for the router, the worker and Socket Mode."""

    settings: Settings
    config: SlackConfig
    store: Store
    access: Access
    intake: Intake
    app: AsyncApp
    budget: AckBudget
    reporter: SlackReporter
    notifier: SlackNotifier
    verifier: SignatureVerifier | None

    async def aclose(self) -> None:
        """Let work that outlived its ack budget finish (called at shutdown by the root)."""
        await self.budget.drain()

    async def handle_http(self, request: Request) -> Response:
        """Read at most 1 MiB, verify the v0 signature, then hand the request to bolt."""
        body = await read_capped(request.headers, request.stream(), MAX_BODY)
        if body is None:
            return JSONResponse({"error": "request too large"}, status_code=413)
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if (
            self.verifier is None
            or not timestamp.isdigit()
            or not self.verifier.is_valid(body, timestamp, signature)
        ):
            return JSONResponse({"error": "invalid request"}, status_code=401)
        # What AsyncSlackRequestHandler.handle does for a POST, with the body we already hold.
        response = await self.app.async_dispatch(to_async_bolt_request(request, body))
        return to_starlette_response(response)


def build_bot(settings: Settings, services: Services, *, slack_config: SlackConfig | None = None) -> SlackBot:
    """Build the bot's parts (no I/O: Slack is first called on the first request)."""
    config = slack_config if slack_config is not None else parse_slack_config(services.config.slack)
    store = Store(services.sessions)
    client = make_client(settings)

    async def group_members(group: str) -> list[str]:
        """Members of a Slack user group (for allow-list rules naming groups)."""
        response = await client.usergroups_users_list(usergroup=group)
        return [str(u) for u in response.get("users") or []]

    async def user_info(user: str) -> Any:
        """``users.info`` (for display names of people mentioned in a request)."""
        return await client.users_info(user=user)

    access = Access(config, store, group_members)
    commands.register(services.commands, access, services.tasks, config.command)
    intake = Intake(
        settings, config, services.tasks, store, access, services.commands, names=Names(user_info)
    )
    budget = AckBudget()
    reporter = SlackReporter(access.channel_for_repo if config.announce.github_tasks else None)
    api_host = _host(settings.slack_api_url)
    notifier = SlackNotifier(
        client,
        store,
        settings.handoff_public_url,
        allowed_hosts=frozenset({api_host}) if api_host else frozenset(),
        before_send=access.refresh_bindings if config.announce.github_tasks else None,
        redactor=Redactor(services.config.secret_patterns, literals=settings.secret_values()),
        message_interval_s=services.config.outbox.slack_message_interval_s,
    )
    secret = settings.slack_signing_secret
    verifier = SignatureVerifier(secret.get_secret_value()) if secret is not None else None
    app = build_app(settings, intake, budget)
    return SlackBot(settings, config, store, access, intake, app, budget, reporter, notifier, verifier)


def build_router(bot: SlackBot) -> APIRouter:
    """``POST /slack/events``."""
    router = APIRouter(tags=["slack"])

    @router.post("/slack/events", include_in_schema=False)
    async def slack_events(request: Request) -> Response:
        """Events, slash commands and interactivity from Slack."""
        return await bot.handle_http(request)

    return router


@dataclass
class SlackIntegration(Integration):
    """The Slack bot's :class:`~core.ports.Integration`, with the bot (for Socket Mode and tests)."""

    bot: SlackBot = field(kw_only=True)


def build_integration(
    settings: Settings, services: Services, *, slack_config: SlackConfig | None = None
) -> SlackIntegration:
    """The Slack :class:`~core.ports.Integration`: router, reporter, notifier, and the bot."""
    bot = build_bot(settings, services, slack_config=slack_config)
    return SlackIntegration(
        name="slack",
        reporters=[bot.reporter],
        notifiers=[bot.notifier],
        router=build_router(bot),
        closers=[bot],
        bot=bot,
    )


def _host(url: str) -> str | None:
    return urlparse(url).hostname
