"""``handoff.yml``: agent profiles, concurrency limits and budgets.

The file is optional; without one Handoff runs with :data:`DEFAULT_CONFIG`, whose ``shell`` profile
runs the instructions as a shell command in the sandbox (a demo and test agent that needs no keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import ConfigError, NotFound


class Limits(BaseModel):
    """Resource limits of one sandbox container."""

    model_config = ConfigDict(extra="forbid")

    memory: str = "1g"
    pids: int = 256
    cpus: float = 1.0
    timeout_s: float = Field(default=1800.0, gt=0)
    tmpfs_size: str = "256m"


class Profile(BaseModel):
    """How to run one kind of agent: image, command, environment and limits."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["command", "builtin"] = "command"
    image: str = "handoff-sandbox:minimal"
    command: list[str] = Field(default_factory=lambda: ["sh", "-c", 'eval "$HANDOFF_INSTRUCTIONS"'])
    env: dict[str, str] = Field(default_factory=dict, description="fixed values passed in")
    env_allow: list[str] = Field(default_factory=list, description="host variables passed through")
    network: bool = False
    user: str = "1000:1000"
    limits: Limits = Field(default_factory=Limits)


class ConcurrencyLimits(BaseModel):
    """How many tasks may run at once, overall and per repository."""

    model_config = ConfigDict(extra="forbid")

    max_running: int = Field(default=4, ge=1)
    per_repo: int = Field(default=2, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    heartbeat_s: float = Field(default=10.0, gt=0)
    stale_after_s: float = Field(default=60.0, gt=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    retry_backoff_s: float = Field(default=5.0, ge=0, description="first automatic retry delay; doubles")
    lost_job_grace_s: float = Field(
        default=30.0, gt=0, description="re-enqueue a queued task whose job vanished"
    )
    retention_days: float = Field(
        default=14.0, ge=4.0, description="keep delivery records and sent notifications this long"
    )
    reaper_interval_s: int = Field(default=5, ge=1, le=60, description="seconds between reaper passes")


class Budget(BaseModel):
    """Per-task budgets; ``None`` means no limit. A task's own budget may only tighten them."""

    model_config = ConfigDict(extra="forbid")

    wall_clock_s: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)

    def tightened(self, task_budget: dict[str, Any]) -> Budget:
        """This budget narrowed by a task's own values (never widened)."""
        merged = self.model_dump()
        for key, value in task_budget.items():
            if key in merged and value is not None:
                merged[key] = value if merged[key] is None else min(merged[key], value)
        return Budget.model_validate(merged)


class OutboxConfig(BaseModel):
    """Delivery of notifications: pacing per target and how long to keep trying."""

    model_config = ConfigDict(extra="forbid")

    github_object_interval_s: float = Field(default=2.0, ge=0, description="writes per GitHub object")
    slack_message_interval_s: float = Field(default=1.0, ge=0, description="chat.update per message")
    github_creates_per_minute: int = Field(default=80, ge=1, description="content creation per installation")
    # Progress-only updates of one object (a new step, more output) go at most this often, which
    # is what keeps a chatty run cheap; state changes skip this and go at the platform's pace.
    progress_interval_s: dict[str, float] = Field(
        default_factory=lambda: {"github": 3.0, "slack": 2.5},
        description="per channel: least time between progress-only updates of one object",
    )
    horizon_s: float = Field(default=86_400.0, gt=0, description="give up on a notification after this")
    max_backoff_s: float = Field(default=300.0, gt=0)
    poll_s: float = Field(default=0.1, gt=0)


class HandoffConfig(BaseModel):
    """The parsed ``handoff.yml``."""

    model_config = ConfigDict(extra="forbid")

    default_profile: str = "shell"
    profiles: dict[str, Profile] = Field(default_factory=lambda: {"shell": Profile()})
    limits: ConcurrencyLimits = Field(default_factory=ConcurrencyLimits)
    budget: Budget = Field(default_factory=Budget)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    # Extra sections read by integrations (github:, slack:); validated by their own models.
    github: dict[str, Any] = Field(default_factory=dict)
    slack: dict[str, Any] = Field(default_factory=dict)
    webhooks: list[dict[str, Any]] = Field(default_factory=list)
    secret_patterns: list[str] = Field(default_factory=list)

    @field_validator("profiles")
    @classmethod
    def _not_empty(cls, value: dict[str, Profile]) -> dict[str, Profile]:
        if not value:
            raise ValueError("at least one profile is needed")
        return value

    def profile(self, name: str | None) -> tuple[str, Profile]:
        """Return ``(name, profile)`` for ``name`` or the default profile."""
        key = name or self.default_profile
        try:
            return key, self.profiles[key]
        except KeyError:
            raise NotFound(
                f"unknown agent profile {key!r}; known: {', '.join(sorted(self.profiles))}"
            ) from None


DEFAULT_CONFIG = HandoffConfig()


def load_config(path: Path | None) -> HandoffConfig:
    """Parse ``handoff.yml`` at ``path`` (or return the defaults when ``path`` is ``None``)."""
    if path is None:
        return HandoffConfig()
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"HANDOFF_CONFIG: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"HANDOFF_CONFIG: {path} is not valid YAML: {exc}") from exc
    try:
        config = HandoffConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"HANDOFF_CONFIG: {path}: {problems}") from exc
    if config.default_profile not in config.profiles:
        raise ConfigError(f"HANDOFF_CONFIG: default_profile {config.default_profile!r} is not a profile")
    return config
