"""Automations on GitHub: rules that start agents from events and schedules.

``events`` (payload models and their facts), ``triggers`` (the events, in the one registry),
``engine`` (which rules fire), ``firing`` (what firing does), ``ci`` (fix-ci), ``api`` (the calls
they make), ``diff`` (a pull request's diff for a review), ``commands`` (``/handoff review``),
``review`` and ``notify`` (posting a review), ``schedule`` (cron firings). :func:`install` wires
them into the GitHub services once per process.
"""

from __future__ import annotations

from core.automations import commands as pause_commands
from core.automations.ledger import Ledger
from core.automations.rules import parse_rules
from core.config import HandoffConfig
from github_app.automations import commands, triggers
from github_app.automations.api import AutomationAPI
from github_app.automations.engine import Automations
from github_app.services import GitHubServices


def install(svc: GitHubServices, config: HandoffConfig) -> Automations:
    """Build the engine, register its events and commands, and attach it to ``svc``."""
    rules = parse_rules(config.automations, "automations")  # load_config checked them already
    ledger = Ledger(svc.sessions, config.automations_paused)
    engine = Automations(svc, AutomationAPI(svc.client), rules, ledger)
    svc.automations = engine
    triggers.register(svc.events)
    pause_commands.register(svc.registry, ledger, svc.tasks)
    commands.register(svc.registry, engine)
    return engine
