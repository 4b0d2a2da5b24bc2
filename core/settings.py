"""Process settings, read from the environment and ``.env`` and validated at start-up.

Build them once at the composition root (:func:`load_settings`) and pass them on; never at import.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError


class Settings(BaseSettings):
    """Everything a Handoff process needs to start; names match the environment variables."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_file_encoding="utf-8")

    database_url: str = Field(default="sqlite:///./.handoff/handoff.db")
    redis_url: str = Field(default="redis://localhost:6379/0")
    handoff_config: Path | None = Field(default=None, description="path to handoff.yml")
    handoff_public_url: str = Field(default="http://localhost:8000")
    handoff_workspace_dir: Path = Field(default=Path("./.handoff/workspaces"))
    handoff_api_token: SecretStr | None = Field(default=None, description="bearer token for /api")
    handoff_queue_name: str = Field(default="handoff:queue")
    docker_host: str | None = Field(default=None)

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
