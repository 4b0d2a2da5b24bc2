"""Which external systems are plugged in, decided once from settings at the composition root."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from core.ports import Integration
from core.settings import Settings

log = logging.getLogger(__name__)

# (name, is it configured?, module with build_integration(settings, services))
_KNOWN = (
    ("github", lambda s: s.github_configured, "github_app.integration"),
    ("slack", lambda s: s.slack_configured, "bot.integration"),
    ("webhook", lambda s: True, "jobs.webhook"),
)


def build_integrations(settings: Settings, services: Any) -> list[Integration]:
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


def worker_context(settings: Settings) -> Any:
    """A worker context with every configured integration attached."""
    from jobs.context import attach, build_worker_context

    wc = build_worker_context(settings)
    return attach(wc, build_integrations(settings, wc))
