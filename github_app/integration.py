"""``build_integration(settings, services)``: the GitHub App as one :class:`core.ports.Integration`.

Called once per process by the composition root when ``settings.github_configured``. ``services``
is the host's :class:`core.services.Services` (the API's, or the worker's extension of it): only
its ``sessions``, ``tasks``, ``queue``, ``config`` and ``commands`` (the one registry) are used,
and ``services.plug(...)`` plugs the result in. It carries:

* ``router`` — ``POST /github/webhooks``
* ``reporters`` — for the journal
* ``notifiers`` — for the outbox sender (channel ``github``)
* ``git_credentials`` and ``post_push`` — for the worker
* ``jobs`` — ``{"github_ingest": coroutine}``: registered with arq (``func(coro, name=...)``)
* ``reconciler`` — the redelivery reconciler (a cron every few minutes)
* ``repositories`` — owner/name → the App's installation, default branch and roles, for tasks
  requested elsewhere (Slack on a GitHub repository)
* ``github`` — the :class:`~github_app.services.GitHubServices` (client, caches), and ``receiver``,
  the webhook route's recorder (closed at shutdown)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from core.config import HandoffConfig
from core.errors import ConfigError
from core.ports import Integration
from core.services import Services
from core.settings import Settings
from github_app.api import GitHubAPI
from github_app.automations.api import AutomationAPI
from github_app.automations.notify import AutomationNotifier
from github_app.automations.reporter import ReviewReporter
from github_app.automations.schedule import Scheduler
from github_app.client import GitHubClient
from github_app.crosspost import FollowUpReporter
from github_app.delivery import GitHubNotifier
from github_app.ingest import INGEST_JOB, ArqEnqueue, Ingest
from github_app.permissions import Permissions
from github_app.pr import GitHubCredentials, GitHubPostPush
from github_app.redelivery import Reconciler
from github_app.repo_config import GitHubServerConfig, RepoConfigLoader
from github_app.reporter import GitHubReporter
from github_app.repositories import GitHubRepositories
from github_app.routing import Screening
from github_app.services import GitHubServices
from github_app.triggers import build_event_registry
from github_app.webhooks import WebhookReceiver, webhook_router


def github_config(config: HandoffConfig) -> GitHubServerConfig:
    """The ``github:`` section of ``handoff.yml``, validated (defaults when absent)."""
    try:
        return GitHubServerConfig.model_validate(config.github or {})
    except ValidationError as exc:
        problems = "; ".join(f"github.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"HANDOFF_CONFIG: {problems}") from exc


def private_key(settings: Settings) -> str:
    """The App's PEM key from ``GITHUB_PRIVATE_KEY`` or the file ``GITHUB_PRIVATE_KEY_PATH``."""
    if settings.github_private_key is not None:
        # .env files often hold the PEM on one line with literal "\n".
        return settings.github_private_key.get_secret_value().replace("\\n", "\n")
    if settings.github_private_key_path is not None:
        try:
            return settings.github_private_key_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"GITHUB_PRIVATE_KEY_PATH: cannot read {settings.github_private_key_path}"
            ) from exc
    raise ConfigError("GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH is required")


def build_services(
    settings: Settings, services: Services, config: GitHubServerConfig | None = None
) -> GitHubServices:
    """The GitHub services of one process."""
    if not settings.github_configured or settings.github_app_id is None:
        raise ConfigError(
            "GitHub App is not configured: GITHUB_APP_ID, a private key and GITHUB_WEBHOOK_SECRET"
        )
    server = config or github_config(services.config)
    client = GitHubClient(
        app_id=settings.github_app_id,
        private_key=private_key(settings),
        api_url=settings.github_api_url,
        write_interval_s=server.write_interval_s,
    )
    api = GitHubAPI(client)
    slug = settings.github_app_slug or "handoff"
    try:
        app_id = int(settings.github_app_id)
    except ValueError as exc:
        raise ConfigError("GITHUB_APP_ID must be the App's numeric id") from exc
    svc = GitHubServices(
        settings=settings,
        server=server,
        client=client,
        api=api,
        permissions=Permissions(api, ttl_s=server.permission_ttl_s),
        repo_configs=RepoConfigLoader(api, server, list(services.config.profiles)),
        sessions=services.sessions,
        tasks=services.tasks,
        registry=services.commands,
        events=build_event_registry(),
        screening=Screening(slug=slug, bot_login=f"{slug}[bot]", app_id=app_id),
        app_id=app_id,
        enqueue=ArqEnqueue(services.queue, settings.handoff_queue_name),
    )
    client.tokens.revoked = svc.revoked
    from github_app.automations import install

    install(svc, services.config)
    return svc


@dataclass
class GitHubIntegration(Integration):
    """The GitHub App's :class:`~core.ports.Integration`, with its services."""

    github: GitHubServices = field(kw_only=True)
    receiver: WebhookReceiver = field(kw_only=True)


def build_integration(
    settings: Settings, services: Services, *, config: GitHubServerConfig | None = None
) -> GitHubIntegration:
    """Everything the GitHub App plugs into the API and the worker."""
    svc = build_services(settings, services, config)
    patterns = list(services.config.secret_patterns)
    receiver = WebhookReceiver(
        settings.github_webhook_secrets, settings.database_url, svc.enqueue, svc.events, svc.screening
    )
    notifier = GitHubNotifier(
        svc.api,
        svc.sessions,
        svc.task_url,
        patterns,
        check_name=svc.server.check_name,
        # Content creation per installation (GitHub: <= 80/min), with a part kept for
        # acknowledgements; edits per object. From handoff.yml's outbox:.
        write_interval_s=60.0 / services.config.outbox.github_creates_per_minute,
        edit_interval_s=services.config.outbox.github_object_interval_s,
        ack_reserve=services.config.outbox.github_ack_reserve,
        automations=AutomationNotifier(
            svc.api, AutomationAPI(svc.client), svc.sessions, svc.task_url, patterns
        ),
    )
    return GitHubIntegration(
        name="github",
        reporters=[GitHubReporter(), ReviewReporter(), FollowUpReporter()],
        notifiers=[notifier],
        router=webhook_router(receiver),
        git_credentials=GitHubCredentials(svc),
        post_push=[GitHubPostPush(svc, patterns)],
        jobs={INGEST_JOB: Ingest(svc).run},
        reconciler=Reconciler(svc.client, svc.sessions),
        schedules=Scheduler(svc.automations).schedules(),
        closers=[receiver],
        repositories=GitHubRepositories(svc, AutomationAPI(svc.client)),
        github=svc,
        receiver=receiver,
    )
