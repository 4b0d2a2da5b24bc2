"""Process settings, read from the environment and ``.env`` and validated at start-up.

Build them once at the composition root (:func:`load_settings`) and pass them on; never at import.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError


def default_data_dir() -> Path:
    """Where Handoff keeps per-host working data: ``$XDG_DATA_HOME/handoff`` (``~/.local/share``).

    Not the project checkout: agents' work trees must never sit inside a git repository.
    """
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "handoff"


class Settings(BaseSettings):
    """Everything a Handoff process needs to start; names match the environment variables."""

    # An empty value (``SLACK_BOT_TOKEN=`` in .env, ``${X:-}`` in compose) means unset, not "".
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", env_file_encoding="utf-8", env_ignore_empty=True
    )

    database_url: str = Field(default="sqlite:///./.handoff/handoff.db")
    redis_url: str = Field(default="redis://localhost:6379/0")
    handoff_config: Path | None = Field(default=None, description="path to handoff.yml")
    handoff_public_url: str = Field(default="http://localhost:8000")
    handoff_workspace_dir: Path = Field(
        default_factory=lambda: default_data_dir() / "workspaces",
        description="checkouts of running tasks; outside every git repository (start-up checks)",
    )
    handoff_mirror: bool = Field(
        default=True, description="keep a bare mirror per repository on each worker host"
    )
    handoff_mirror_dir: Path = Field(
        default_factory=lambda: default_data_dir() / "mirrors",
        description="where the mirrors live (host-only: never mounted into a sandbox)",
    )
    handoff_mirror_max_bytes: int = Field(
        default=20 * 1024**3, gt=0, description="least recently used mirrors go beyond this size"
    )
    handoff_api_token: SecretStr | None = Field(default=None, description="bearer token for /api")
    handoff_queue_name: str = Field(default="handoff:queue")
    docker_host: str | None = Field(default=None)
    handoff_instance: str | None = Field(
        default=None, description="labels this deployment's containers; default: derived from DATABASE_URL"
    )
    handoff_session_secret: SecretStr | None = Field(
        default=None, description="signs dashboard session cookies; generated per process when unset"
    )

    # GitHub App (github_app/). Several webhook secrets may be given, comma-separated, for rotation.
    github_app_id: str | None = None
    github_private_key: SecretStr | None = None
    github_private_key_path: Path | None = None
    github_webhook_secret: SecretStr | None = None
    github_api_url: str = "https://api.github.com"
    github_git_url: str = "https://github.com"
    github_web_url: str = Field(default="https://github.com", description="base of OAuth sign-in pages")
    github_app_slug: str | None = None
    github_client_id: str | None = None
    github_client_secret: SecretStr | None = None

    # Slack (bot/).
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"

    # Model providers (jobs/agent). Only the key a profile names is ever passed to a sandbox.
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None

    @property
    def instance_id(self) -> str:
        """Which deployment a container belongs to, so deployments sharing a Docker engine never
        remove each other's containers (one database = one deployment)."""
        if self.handoff_instance:
            return self.handoff_instance
        return hashlib.sha256(self.database_url.encode()).hexdigest()[:12]

    @property
    def github_webhook_secrets(self) -> list[str]:
        """Every configured webhook secret (rotation: old and new both verify)."""
        if self.github_webhook_secret is None:
            return []
        return [
            part.strip() for part in self.github_webhook_secret.get_secret_value().split(",") if part.strip()
        ]

    def secret_values(self) -> list[str]:
        """Every secret value this process holds (each ``SecretStr`` setting, each webhook secret):
        masked wherever it might appear — events, logs, comments, Slack messages."""
        values: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        # Rotation lists several webhook secrets in one setting: each one is a secret of its own.
        return values + self.github_webhook_secrets

    @property
    def github_configured(self) -> bool:
        """True when the GitHub App can verify webhooks and call the API."""
        has_key = self.github_private_key is not None or self.github_private_key_path is not None
        return bool(self.github_app_id and has_key and self.github_webhook_secrets)

    @property
    def slack_configured(self) -> bool:
        """True when the Slack bot can verify requests and post."""
        return self.slack_bot_token is not None and (
            self.slack_signing_secret is not None or self.slack_app_token is not None
        )

    @field_validator("handoff_workspace_dir")
    @classmethod
    def _absolute_workspace(cls, value: Path) -> Path:
        # Containers bind-mount checkouts from here: Docker needs absolute paths.
        return value.expanduser().resolve()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise :class:`ConfigError` naming every bad or missing value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
