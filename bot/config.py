"""The ``slack:`` section of ``handoff.yml``: who may start tasks, on which repositories, from where.

Example::

    slack:
      command: /handoff
      admins: [U0ADMIN]               # may bind channels; count as writers on every repository
      allow:
        - repos: [acme/api, acme/web] # "acme/*" and "*" match many
          users: [U01ALICE]
          usergroups: [S0BACKEND]     # Slack user groups (needs usergroups:read)
          channels: [C0API]           # anyone posting in #api may use these repositories there
      channels:                       # channel bindings kept in config; `/handoff bind` adds more
        C0API: acme/api
      github_logins:                  # PRs and audit entries name the GitHub person
        U01ALICE: alice
      announce:
        github_tasks: true            # tasks started on GitHub show up in the bound channel

Core's ``HandoffConfig`` keeps the section as a plain mapping (``config.slack``); this model
validates it when the integration is built, so a typo fails start-up with the key's path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.config import load_config
from core.errors import ConfigError

# owner/name as GitHub spells it; "*" wildcards only in allow-list patterns.
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class AllowRule(BaseModel):
    """Slack users, user groups and channels that may start tasks on ``repos``."""

    model_config = ConfigDict(extra="forbid")

    repos: list[str] = Field(min_length=1)
    users: list[str] = Field(default_factory=list)
    usergroups: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)


class Announce(BaseModel):
    """Whether tasks started elsewhere are announced in the channel bound to their repository."""

    model_config = ConfigDict(extra="forbid")

    github_tasks: bool = False


class SlackConfig(BaseModel):
    """The parsed ``slack:`` section; empty means nobody may start tasks from Slack."""

    model_config = ConfigDict(extra="forbid")

    command: str = "/handoff"
    admins: list[str] = Field(default_factory=list)
    allow: list[AllowRule] = Field(default_factory=list)
    channels: dict[str, str] = Field(default_factory=dict, description="channel id -> repository")
    github_logins: dict[str, str] = Field(default_factory=dict, description="Slack user id -> GitHub login")
    announce: Announce = Field(default_factory=Announce)

    @field_validator("command")
    @classmethod
    def _slash(cls, value: str) -> str:
        if not re.fullmatch(r"/[a-z0-9_-]{1,31}", value):
            raise ValueError("must look like /handoff")
        return value


def load_slack_config(path: Path | None) -> SlackConfig:
    """The ``slack:`` section of ``handoff.yml`` at ``path``, validated (defaults when absent)."""
    return parse_slack_config(load_config(path).slack, where=str(path) if path else "handoff.yml")


def parse_slack_config(section: Any, where: str = "handoff.yml") -> SlackConfig:
    """Validate the ``slack:`` mapping; a :class:`ConfigError` names every bad key."""
    try:
        return SlackConfig.model_validate(section or {})
    except ValidationError as exc:
        problems = "; ".join(f"slack.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"HANDOFF_CONFIG: {where}: {problems}") from exc
