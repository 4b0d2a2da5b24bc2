"""Per-repository ``.handoff.yml`` and the server's ``github:`` section that bounds it.

The repository file is read from the **default branch** only (a pull request's head could otherwise
rewrite its own limits). The server decides, as Atlantis's ``allowed_overrides`` does, which keys a
repository may set and within which bounds; every value outside them is refused with a note that
the tracking comment shows, and the server's value applies instead.

Server side (``handoff.yml``)::

    github:
      trigger_label: handoff
      allowed_overrides: [trigger_label, agent, model, setup, test, budget]
      agents: [shell, claude]          # profiles a repository may pick (default: any)
      models: [claude-sonnet-4]        # models a repository may pick (default: any)
      max_budget: {wall_clock_s: 3600, max_tokens: 2000000, max_cost_usd: 10}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from github_app.api import GitHubAPI

CONFIG_PATH = ".handoff.yml"
OVERRIDABLE = ("trigger_label", "agent", "model", "setup", "test", "budget")
# Keys the agent reads from the checkout itself (its notes for the agent): valid, nothing to check.
AGENT_KEYS = ("notes",)
# Automation rules: kept as written and checked against the server's bounds by the automations
# (github_app.automations), which report a refused rule on the repository's commits.
AUTOMATIONS = "automations"


class BudgetBounds(BaseModel):
    """Upper bounds for a repository's budget (``None``: no bound)."""

    model_config = ConfigDict(extra="forbid")

    wall_clock_s: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)


class GitHubServerConfig(BaseModel):
    """The ``github:`` section of the server's ``handoff.yml``."""

    model_config = ConfigDict(extra="forbid")

    trigger_label: str = "handoff"
    allowed_overrides: list[str] = Field(default_factory=lambda: list(OVERRIDABLE))
    agents: list[str] | None = None
    models: list[str] | None = None
    max_budget: BudgetBounds = Field(default_factory=BudgetBounds)
    check_name: str = "Handoff"
    # Working on a fork's pull request pushes its commits (as modified by the agent) into this
    # repository as handoff/<task>, where this repository's workflows run on them: opt in.
    fork_pull_requests: bool = Field(
        default=False, description="let writers start tasks on pull requests from forks"
    )
    write_interval_s: float = Field(default=1.0, ge=0, description="between mutating calls, per installation")
    permission_ttl_s: float = Field(default=60.0, ge=0)
    config_ttl_s: float = Field(default=60.0, ge=0)


class RepoConfig(BaseModel):
    """The values in effect for one repository, and what was refused."""

    trigger_label: str
    agent: str | None = None
    model: str | None = None
    setup: str | None = None
    test: str | None = None
    budget: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    automations: Any = None


def resolve(server: GitHubServerConfig, profiles: Collection[str], text: str | None) -> RepoConfig:
    """Apply ``.handoff.yml`` (``text``) over the server's defaults, refusing what is out of bounds."""
    config = RepoConfig(trigger_label=server.trigger_label)
    if text is None:
        return config
    try:
        raw: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        config.notes.append(
            f"`{CONFIG_PATH}` is not valid YAML and was ignored ({str(exc).splitlines()[0]})."
        )
        return config
    if not isinstance(raw, dict):
        config.notes.append(f"`{CONFIG_PATH}` must be a mapping; it was ignored.")
        return config
    for key, value in raw.items():
        if key in AGENT_KEYS:
            continue
        if key == AUTOMATIONS:
            config.automations = value
            continue
        refusal = _check(server, profiles, str(key), value)
        if refusal:
            config.notes.append(refusal)
        elif key == "budget":
            config.budget = dict(value)
        else:
            setattr(config, str(key), str(value))
    return config


def _check(server: GitHubServerConfig, profiles: Collection[str], key: str, value: Any) -> str | None:
    """Why ``key: value`` is refused, or ``None`` when it is allowed."""
    if key not in OVERRIDABLE:
        return f"`{key}` is not a `{CONFIG_PATH}` setting; ignored."
    if key not in server.allowed_overrides:
        return f"`{key}` may not be set per repository on this server; the server's value applies."
    if key == "budget":
        return _check_budget(server.max_budget, value)
    if not isinstance(value, str) or not value.strip():
        return f"`{key}` must be a non-empty string; ignored."
    if key == "agent":
        allowed = [p for p in profiles if server.agents is None or p in server.agents]
        if value not in allowed:
            return f"agent `{value}` is not allowed here (allowed: {', '.join(sorted(allowed))}); the default applies."
    if key == "model" and server.models is not None and value not in server.models:
        return (
            f"model `{value}` is not allowed here (allowed: {', '.join(server.models)}); the default applies."
        )
    return None


def _check_budget(bounds: BudgetBounds, value: Any) -> str | None:
    try:
        asked = BudgetBounds.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return f"`budget` is invalid ({problems}); the server's budget applies."
    over = [
        f"{name} {getattr(asked, name):g} > {limit:g}"
        for name, limit in bounds.model_dump().items()
        if limit is not None and getattr(asked, name) is not None and getattr(asked, name) > limit
    ]
    if over:
        return f"`budget` is above this server's bounds ({', '.join(over)}); the server's budget applies."
    return None


class RepoConfigLoader:
    """Reads ``.handoff.yml`` from the default branch, cached per repository for ``ttl_s``."""

    def __init__(
        self,
        api: GitHubAPI,
        server: GitHubServerConfig,
        profiles: Collection[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.server = server
        self.profiles = list(profiles)
        self._clock = clock
        self._cache: dict[str, tuple[RepoConfig, float]] = {}

    async def load(self, installation_id: int, repo: str, default_branch: str) -> RepoConfig:
        """The repository's config in effect (server defaults when it has no file)."""
        hit = self._cache.get(repo)
        now = self._clock()
        if hit is not None and hit[1] > now:
            return hit[0]
        text = await self.api.file(installation_id, repo, CONFIG_PATH, default_branch)
        config = resolve(self.server, self.profiles, text)
        self._cache[repo] = (config, now + self.server.config_ttl_s)
        return config
