"""Which external systems are plugged in, decided once from settings at the composition root."""

from __future__ import annotations

import importlib
import logging

from core.ports import Integration
from core.services import Services
from core.settings import Settings
from jobs.services import WorkerServices, build_worker_services

log = logging.getLogger(__name__)

# (name, is it configured?, module with build_integration(settings, services))
_KNOWN = (
    ("github", lambda s: s.github_configured, "github_app.integration"),
    ("slack", lambda s: s.slack_configured, "bot.integration"),
    ("webhook", lambda s: True, "jobs.webhook"),
)


def build_integrations(settings: Settings, services: Services) -> list[Integration]:
    """Build every configured integration (GitHub App, Slack bot, status webhooks)."""
    built: list[Integration] = []
    for name, configured, module_name in _KNOWN:
        if not configured(settings):
            continue
        module = importlib.import_module(module_name)
        integration = module.build_integration(settings, services)
        if integration is not None:
            log.info("integration enabled: %s", name)
            built.append(integration)
    return built


def worker_services(settings: Settings) -> WorkerServices:
    """The worker's services with every configured integration plugged in."""
    services = build_worker_services(settings)
    services.plug(build_integrations(settings, services))
    return services
