"""What the composition root plugs in: ``build_integration(settings, services) -> Integration``.

The router exposes ``POST /slack/events`` (events, slash commands and interactivity share one
URL), served by :class:`~bot.ingress.SlackIngress`: verify, record, enqueue, answer. The
``slack_ingest`` job (``jobs``) does the rest in the worker; the sweep (``reconciler``) queues
again a request whose job was lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Request, Response

from bot import commands, messages
from bot.access import Access
from bot.client import make_client
from bot.config import SlackConfig, parse_slack_config
from bot.delivery import SlackNotifier
from bot.ingress import INGEST_JOB, SlackIngress
from bot.intake import Intake
from bot.job import SlackJob, SlackSweep
from bot.people import Names
from bot.reporter import SlackReporter
from bot.requests import RequestReader
from bot.signature import SlackSignature
from bot.starting import Starter
from bot.store import Store
from bot.workspaces import Workspaces
from core.commands import Registry
from core.ports import Integration, RepositoryHost
from core.redact import Redactor
from core.services import Services
from core.settings import Settings


@dataclass
class SlackBot:
    """Everything the Slack integration built, for the router, the worker and Socket Mode."""

    settings: Settings
    config: SlackConfig
    store: Store
    access: Access
    intake: Intake
    ingress: SlackIngress
    job: SlackJob
    reporter: SlackReporter
    notifier: SlackNotifier
    sweep: SlackSweep

    async def aclose(self) -> None:
        """Finish the endpoint's writes in flight and close its pool (called at shutdown)."""
        await self.ingress.aclose()


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

    def hosts() -> list[RepositoryHost]:
        """Code hosts plugged in beside the bot (GitHub), looked up when a task starts."""
        return [i.repositories for i in services.integrations if i.repositories is not None]

    workspaces = Workspaces.single(client)
    access = Access(config, store, group_members)
    commands.register(services.commands, access, services.tasks, config.command)
    starter = Starter(settings, config, services.tasks, store, access, services.commands, workspaces, hosts)
    intake = Intake(
        config, services.tasks, store, access, services.commands, starter, workspaces, names=Names(user_info)
    )

    async def thread_started(task_id: str, channel: str, ts: str) -> None:
        """A slash command's task got its thread (its status message): a pull request links it."""
        url = (await workspaces.identity(None)).thread_url(channel, ts)
        if url:
            await store.set_thread_url(task_id, url)

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
        on_thread=thread_started,
    )
    secret = settings.slack_signing_secret
    verifier = SlackSignature(secret.get_secret_value()) if secret is not None else None
    registry = services.commands

    def help_text() -> str:
        return messages.help_text(registry.help_for("slack"), config.command)

    def command_words() -> set[str]:
        return {s.name for s in registry.specs if s.available_on("slack") and s.name != Registry.WORK}

    async def in_task_thread(team: str | None, channel: str, thread_ts: str) -> bool:
        return await store.thread_task(channel, thread_ts) is not None

    ingress = SlackIngress(
        RequestReader(config.command, help_text, command_words),
        verifier,
        settings.database_url,
        services.queue,
        settings.handoff_queue_name,
        in_task_thread,
    )
    return SlackBot(
        settings,
        config,
        store,
        access,
        intake,
        ingress,
        SlackJob(services.sessions, intake),
        reporter,
        notifier,
        SlackSweep(services.sessions, services.queue, settings.handoff_queue_name),
    )


def build_router(bot: SlackBot) -> APIRouter:
    """``POST /slack/events``."""
    router = APIRouter(tags=["slack"])

    @router.post("/slack/events", include_in_schema=False)
    async def slack_events(request: Request) -> Response:
        """Events, slash commands and interactivity from Slack."""
        return await bot.ingress(request)

    return router


@dataclass
class SlackIntegration(Integration):
    """The Slack bot's :class:`~core.ports.Integration`, with the bot (for Socket Mode and tests)."""

    bot: SlackBot = field(kw_only=True)


def build_integration(
    settings: Settings, services: Services, *, slack_config: SlackConfig | None = None
) -> SlackIntegration:
    """The Slack :class:`~core.ports.Integration`: router, reporter, notifier, the ingest job."""
    bot = build_bot(settings, services, slack_config=slack_config)
    return SlackIntegration(
        name="slack",
        reporters=[bot.reporter],
        notifiers=[bot.notifier],
        router=build_router(bot),
        jobs={INGEST_JOB: bot.job.run},
        reconciler=bot.sweep,
        closers=[bot],
        bot=bot,
    )


def _host(url: str) -> str | None:
    return urlparse(url).hostname
