"""``handoff.yml``: agent profiles, concurrency limits and budgets.

The file is optional; without one Handoff runs with :data:`DEFAULT_CONFIG`, whose ``shell`` profile
runs the instructions as a shell command in the sandbox (a demo and test agent that needs no keys).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.budget import Budget
from core.errors import ConfigError, NotFound
from core.redact import compile_patterns


class Limits(BaseModel):
    """Resource limits of one sandbox container."""

    model_config = ConfigDict(extra="forbid")

    memory: str = "1g"
    pids: int = 256
    cpus: float = 1.0
    timeout_s: float = Field(default=1800.0, gt=0)
    tmpfs_size: str = "256m"


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
#: Variables Handoff sets in a sandbox for each run (the model gateway, the egress proxy, the task):
#: a profile's fixed ``env`` may not set them — a key written there would reach the sandbox.
RESERVED_ENV = frozenset(
    {
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "CODEX_API_KEY",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
        "no_proxy",
    }
)


def normalize_domain(value: str) -> str:
    """A lower-case host name for an egress allow-list (``*.`` prefix kept for subdomains).

    Raises ``ValueError`` for anything else: IP addresses, URLs, ports, single labels.
    """
    name = value.strip().lower().rstrip(".")
    wildcard = name.startswith("*.")
    labels = (name[2:] if wildcard else name).split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a domain name (want e.g. pypi.org or *.pythonhosted.org)")
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} is an IP address: the allow-list takes domain names only")
    return name


class Egress(BaseModel):
    """Where a profile's sandbox may connect: through Handoff's egress proxy, by allow-list.

    Only ports 443 and 80, only these names, and never to loopback, private, link-local (cloud
    metadata) or this host's own addresses, whatever a name resolves to (see ``SECURITY.md``).
    """

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(
        default_factory=list, description="domain names (pypi.org) or subdomains (*.pythonhosted.org)"
    )

    @field_validator("allow")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [normalize_domain(entry) for entry in value]


class Profile(BaseModel):
    """How to run one kind of agent: image, command, environment and limits.

    ``kind: command`` runs ``command`` in the sandbox and reads its stdout as events (``output``
    says in which format: Handoff's own JSON lines, Claude Code's ``stream-json`` or Codex's
    ``exec --json``). ``kind: builtin`` runs Handoff's own agent loop in the worker against
    ``provider``/``model``, executing each tool call inside a long-lived sandbox container.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["command", "builtin"] = "command"
    image: str = "handoff-sandbox:minimal"
    command: list[str] = Field(default_factory=lambda: ["sh", "-c", 'eval "$HANDOFF_INSTRUCTIONS"'])
    env: dict[str, str] = Field(default_factory=dict, description="fixed values passed in")
    # The sandbox's network is always "none"; the way out is the egress proxy (``egress``) and,
    # for model calls, the run's model gateway (``api_key_env``).
    network: bool = Field(default=False, description="removed: true is refused (see egress)")
    egress: Egress | None = Field(
        default=None, description="network through the egress proxy, by domain allow-list"
    )
    user: str = "1000:1000"
    limits: Limits = Field(default_factory=Limits)
    history_depth: int = Field(
        default=1, ge=0, description="commits of history in the agent's own .git (0: no .git at all)"
    )
    # -- command profiles
    output: Literal["events", "claude-code", "codex"] = Field(
        default="events", description="format of the command's stdout"
    )
    prompt: Literal["raw", "agent"] | None = Field(
        default=None,
        description="HANDOFF_INSTRUCTIONS: the request as written (raw), or as an agent prompt with "
        "untrusted text fenced (agent); default: agent for claude-code and codex, else raw",
    )
    # Only the model keys Handoff holds may be named: never a GitHub or Slack token, never an
    # arbitrary variable of the host's environment.
    api_key_env: Literal["ANTHROPIC_API_KEY", "OPENAI_API_KEY"] | None = Field(
        default=None,
        description="the CLI's key variable: it holds the run's model-gateway token, never the key",
    )
    # -- the built-in agent (and the model a command profile's CLI is told to use)
    provider: Literal["anthropic", "openai"] | None = None
    model: str | None = None
    models: list[str] | None = Field(default=None, description="models a task may pick (None: any)")
    max_steps: int = Field(default=50, ge=1, description="model calls per run")
    max_output_tokens: int = Field(default=8192, ge=1, description="per model call")
    tool_timeout_s: float = Field(default=120.0, gt=0, description="per tool call")
    setup_timeout_s: float = Field(default=600.0, gt=0, description="per setup command")
    tool_output_chars: int = Field(default=30_000, ge=1000, description="tool output kept for the model")
    stream: bool = Field(default=True, description="stream model responses")

    @property
    def agent_prompt(self) -> bool:
        """Whether a command profile gets the fenced agent prompt rather than the raw request."""
        return self.prompt == "agent" or (self.prompt is None and self.output != "events")

    @field_validator("network")
    @classmethod
    def _no_bridge(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "network: true (an open bridge to every address, the host's included) is no longer "
                "supported: a sandbox's network is always none. List the domains it may reach under "
                "egress.allow (HTTPS and HTTP through Handoff's proxy); model calls go through the "
                "run's model gateway (api_key_env)"
            )
        return value

    @field_validator("env")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(set(value) & RESERVED_ENV)
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} cannot be set here: Handoff sets them for each run (a model "
                "key never enters a sandbox; the CLI gets a gateway token)"
            )
        return value

    @model_validator(mode="after")
    def _builtin_needs_a_model(self) -> Profile:
        if self.kind == "builtin" and (self.provider is None or not self.model):
            raise ValueError("a builtin profile needs provider (anthropic or openai) and model")
        if self.api_key_env and not self.gateway_models:
            raise ValueError(
                "a profile with api_key_env needs model (or models): its model gateway lets only those through"
            )
        return self

    @property
    def gateway_models(self) -> frozenset[str]:
        """The models a command profile's gateway lets through: ``models`` and ``model``."""
        return frozenset([*(self.models or []), *([self.model] if self.model else [])])


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
        default=14.0,
        ge=4.0,
        description="keep delivery records, sent notifications and ended tasks' events this long",
    )
    reaper_interval_s: int = Field(default=5, ge=1, le=60, description="seconds between reaper passes")


class OutputLimits(BaseModel):
    """How much of what one run prints is kept: past these, agent output is counted, not stored."""

    model_config = ConfigDict(extra="forbid")

    max_events: int = Field(default=50_000, ge=100, description="events stored per run")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024, description="event data stored per run")
    max_pending: int = Field(
        default=10_000, ge=100, description="events held in memory while the database lags"
    )


class OutboxConfig(BaseModel):
    """Delivery of notifications: pacing per target and how long to keep trying."""

    model_config = ConfigDict(extra="forbid")

    github_object_interval_s: float = Field(default=2.0, ge=0, description="writes per GitHub object")
    slack_message_interval_s: float = Field(default=1.0, ge=0, description="chat.update per message")
    github_creates_per_minute: int = Field(default=80, ge=1, description="content creation per installation")
    # Acknowledgements (the 👀, the queued check run) go first: every write of an installation
    # spends from one budget of ``github_creates_per_minute``, and other writes leave the last
    # ``github_ack_reserve`` of it to acknowledgements.
    github_ack_reserve: int = Field(
        default=5, ge=1, description="writes of the budget kept for acknowledgements"
    )
    # Progress-only updates of one object (a new step, more output) go at most this often, which
    # is what keeps a chatty run cheap; state changes skip this and go at the platform's pace.
    progress_interval_s: dict[str, float] = Field(
        default_factory=lambda: {"github": 3.0, "slack": 2.5},
        description="per channel: least time between progress-only updates of one object",
    )
    horizon_s: float = Field(default=86_400.0, gt=0, description="give up on a notification after this")
    max_backoff_s: float = Field(default=300.0, gt=0)
    poll_s: float = Field(default=0.1, gt=0)


class Price(BaseModel):
    """What one model costs, in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        """The cost of ``tokens_in`` input and ``tokens_out`` output tokens."""
        return (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1_000_000


class HandoffConfig(BaseModel):
    """The parsed ``handoff.yml``."""

    model_config = ConfigDict(extra="forbid")

    default_profile: str = "shell"
    profiles: dict[str, Profile] = Field(default_factory=lambda: {"shell": Profile()})
    limits: ConcurrencyLimits = Field(default_factory=ConcurrencyLimits)
    budget: Budget = Field(default_factory=Budget)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    output: OutputLimits = Field(default_factory=OutputLimits)
    # Extra sections read by integrations (github:, slack:); validated by their own models.
    github: dict[str, Any] = Field(default_factory=dict)
    slack: dict[str, Any] = Field(default_factory=dict)
    webhooks: list[dict[str, Any]] = Field(default_factory=list)
    # Automation rules (core.automations.rules validates them at load) and the kill switch:
    # repositories ("owner/name", "owner/*") whose automations never fire.
    automations: list[Any] = Field(default_factory=list)
    automations_paused: list[str] = Field(default_factory=list)
    secret_patterns: list[str] = Field(default_factory=list)
    # Model prices; a key matches a model exactly or as its longest prefix ("claude-sonnet-4").
    prices: dict[str, Price] = Field(default_factory=dict)

    @field_validator("secret_patterns")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        compile_patterns(value)  # raises ValueError naming the bad pattern
        return value

    def price(self, model: str | None) -> Price | None:
        """The price of ``model``: an exact entry, else the longest key it starts with."""
        if not model:
            return None
        if model in self.prices:
            return self.prices[model]
        matches = [key for key in self.prices if model.startswith(key)]
        return self.prices[max(matches, key=len)] if matches else None

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
    # A repository may only pick among github.agents: a name there that is no profile is a typo
    # that would refuse every such request at run time; say so at start-up instead.
    agents = config.github.get("agents")
    if isinstance(agents, list):
        unknown = [str(a) for a in agents if a not in config.profiles]
        if unknown:
            raise ConfigError(
                f"HANDOFF_CONFIG: {path}: github.agents names no profile: {', '.join(unknown)} "
                f"(profiles: {', '.join(config.profiles)})"
            )
    _check_automations(config, path)
    return config


def _check_automations(config: HandoffConfig, path: Path) -> None:
    """Automation rules are checked at start-up: a bad rule stops the process, naming it."""
    from core.automations.rules import parse_rules

    try:
        rules = parse_rules(config.automations, "automations")
    except ValueError as exc:
        raise ConfigError(f"HANDOFF_CONFIG: {path}: {exc}") from exc
    for rule in rules:
        if rule.agent is not None and rule.agent not in config.profiles:
            raise ConfigError(
                f"HANDOFF_CONFIG: {path}: automations ({rule.name}): agent {rule.agent!r} is no profile "
                f"(profiles: {', '.join(config.profiles)})"
            )
