"""Shared set-up of the tests that run the real agent CLIs: their profiles (the images come from
the ``agent_images`` fixture in ``conftest.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import load_config

EXAMPLES = Path(__file__).parent.parent / "examples" / "handoff.yml"
LIMITS = {"memory": "1g", "pids": 256, "cpus": 1.0, "timeout_s": 180, "tmpfs_size": "256m"}
MODEL = {"claude-code": "claude-test", "codex": "gpt-test"}


def cli_profile(name: str, **overrides: Any) -> dict[str, Any]:
    """The example profile of CLI ``name``, on the test's model names and limits."""
    profile = load_config(EXAMPLES).profiles[name].model_dump(exclude_none=True)
    model = MODEL[name]
    profile.update(model=model, models=[model], limits=LIMITS)
    if "env" in profile:
        profile["env"] = {k: model for k in profile["env"]}  # Claude Code's small model, too
    profile.update(overrides)
    return profile
