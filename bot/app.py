"""The slack-bolt ``AsyncApp``: built once, listeners registered, client pointed at SLACK_API_URL.

Bolt runs with ``process_before_response=True``: a listener finishes before the HTTP response (or
the Socket Mode ack) goes out, so "acknowledged" means "recorded". The listener's work — claim
the delivery, create or steer the task, queue replies — is a few milliseconds of database writes
and one enqueue; :class:`AckBudget` still bounds it at 2 s so Slack's 3-s limit holds even when
the database is slow. Past the budget the ack goes out and the work finishes in the background; a
slash command then gets its answer through ``response_url``.

Failures differ by entry point: an event whose work failed answers 500, so Slack retries it (the
claim was released); a slash command or a button answers the person right away instead, since
Slack never retries those.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.answers import Answer
from bot.intake import Intake
from core.settings import Settings

log = logging.getLogger(__name__)

ACK_BUDGET_S = 2.0
TRY_AGAIN = "Handoff could not take this right now ({error}). Nothing was started; please try again shortly."


def make_client(settings: Settings) -> AsyncWebClient:
    """The Web API client, on SLACK_API_URL (tests point it at a local fake)."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    base = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    return AsyncWebClient(token=token, base_url=base, timeout=10)


class AckBudget:
    """Runs a listener's work, but never holds the acknowledgement longer than ``budget_s``."""

    def __init__(self, budget_s: float = ACK_BUDGET_S) -> None:
        self.budget_s = budget_s
        # Work that outlived its budget; kept referenced so it is never garbage-collected mid-way.
        self.late: set[asyncio.Task[Any]] = set()

    async def run(
        self, work: Awaitable[Answer], on_late: Callable[[Answer], Awaitable[None]] | None = None
    ) -> Answer | None:
        """The work's answer, or ``None`` if it is still going when the budget runs out."""
        task: asyncio.Task[Answer] = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self.budget_s)
        if done:
            return task.result()
        log.warning(
            "slack request work exceeded the %.1f s ack budget; finishing after the ack", self.budget_s
        )
        self.late.add(task)
        task.add_done_callback(lambda t: self._finished_late(t, on_late))
        return None

    def _finished_late(
        self, task: asyncio.Task[Answer], on_late: Callable[[Answer], Awaitable[None]] | None
    ) -> None:
        self.late.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("late slack request work failed: %s", error)
        if on_late is not None:
            # The person was told "working on it": tell them how it ended, even if it failed.
            answer = (
                task.result() if error is None else Answer(TRY_AGAIN.format(error=error.__class__.__name__))
            )
            follow = asyncio.ensure_future(on_late(answer))
            self.late.add(follow)
            follow.add_done_callback(self.late.discard)

    async def drain(self) -> None:
        """Wait for late work (on shutdown, so nothing half-done is dropped)."""
        while self.late:
            await asyncio.gather(*list(self.late), return_exceptions=True)


class _ClientGiven(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment itself and warns that the client we pass
    (the same token, on SLACK_API_URL) wins; that is the intent, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop only that one message."""
        return "`token` will be unused" not in record.getMessage()


BOLT_LOG = logging.getLogger("bot.bolt")
BOLT_LOG.addFilter(_ClientGiven())


def build_app(settings: Settings, intake: Intake, budget: AckBudget) -> AsyncApp:
    """The bolt app with every listener registered."""
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    app = AsyncApp(
        client=make_client(settings),
        signing_secret=secret,
        # Socket-only installs have no signing secret; bolt skips verification in socket mode anyway.
        request_verification_enabled=bool(secret),
        process_before_response=True,
        name="handoff",
        logger=BOLT_LOG,
    )

    @app.command(intake.config.command)
    async def on_command(ack: AsyncAck, body: dict[str, Any]) -> None:
        """``/handoff ...``: the answer rides on the acknowledgement."""
        try:
            answer = await budget.run(intake.slash(body), lambda late: intake.respond(body, late))
        except Exception as exc:  # a slash command is never retried by Slack: say what happened
            log.exception("slash command failed")
            await ack(text=TRY_AGAIN.format(error=exc.__class__.__name__), response_type="ephemeral")
            return
        if answer is None:
            await ack(text="Working on it… I'll answer here in a moment.", response_type="ephemeral")
        elif answer.text:
            await ack(text=answer.text, response_type="ephemeral")
        else:
            await ack()

    @app.event("app_mention")
    async def on_mention(body: dict[str, Any], context: AsyncBoltContext) -> None:
        """``@Handoff ...``; answered through the outbox."""
        # An exception answers 500 and Slack retries; the delivery claim was released for it.
        await budget.run(intake.mention(body, context.bot_user_id))

    @app.event("message")
    async def on_message(body: dict[str, Any], context: AsyncBoltContext) -> None:
        """DMs and replies in task threads (everything else is ignored)."""
        await budget.run(intake.message(body, context.bot_user_id))

    @app.action(re.compile(r"^handoff_"))
    async def on_action(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        """Buttons on status messages; answered through ``response_url``."""
        await ack()
        try:
            await budget.run(intake.action(body))
        except Exception as exc:  # buttons are not retried either
            log.exception("slack button failed")
            if body.get("response_url"):
                await respond(text=TRY_AGAIN.format(error=exc.__class__.__name__), replace_original=False)

    return app
