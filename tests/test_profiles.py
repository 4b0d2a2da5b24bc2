"""Profiles that would open a way out of the sandbox are configuration errors, each with a clear
message: an open network bridge, a key or proxy in a profile's fixed environment, a gateway with no
model list, an allow-list entry that is not a domain name. A task picks only a model its profile
lets through."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.config import HandoffConfig, Profile, load_config
from core.errors import ConfigError
from core.models import Run, Task
from jobs.execute import Execution


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (
            {"network": True},
            "network: true (an open bridge to every address, the host's included) is no longer",
        ),
        ({"env": {"ANTHROPIC_API_KEY": "sk-ant-x"}}, "ANTHROPIC_API_KEY cannot be set here"),
        ({"env": {"HTTPS_PROXY": "http://evil"}}, "HTTPS_PROXY cannot be set here"),
        ({"api_key_env": "OPENAI_API_KEY"}, "a profile with api_key_env needs model (or models)"),
        (
            {"egress": {"allow": ["169.254.169.254"]}},
            "is an IP address: the allow-list takes domain names only",
        ),
        ({"egress": {"allow": ["https://pypi.org"]}}, "is not a domain name"),
    ],
    ids=[
        "bridge",
        "key-in-env",
        "proxy-in-env",
        "gateway-without-models",
        "ip-on-allow-list",
        "url-on-allow-list",
    ],
)
def test_unsafe_profiles_are_config_errors(tmp_path: Path, profile: dict[str, object], message: str) -> None:
    path = tmp_path / "handoff.yml"
    path.write_text(json.dumps({"profiles": {"shell": profile}}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value) and "profiles.shell" in str(caught.value)


@pytest.mark.parametrize(
    ("profile", "asked", "runs"),
    [
        ({"api_key_env": "ANTHROPIC_API_KEY", "model": "claude-a"}, "claude-b", "claude-a"),
        (
            {"api_key_env": "ANTHROPIC_API_KEY", "model": "claude-a", "models": ["claude-b"]},
            "claude-b",
            "claude-b",
        ),
        ({"model": "m-a", "models": ["m-a"]}, "m-b", "m-a"),
        ({"model": "m-a"}, "m-b", "m-b"),
    ],
    ids=["gateway-profile-model-only", "gateway-listed", "listed-elsewhere", "any-model"],
)
def test_a_task_picks_only_a_model_its_profile_lets_through(
    profile: dict[str, Any], asked: str, runs: str
) -> None:
    # A CLI profile behind the gateway runs only its own models: asking for another gets the
    # profile's model (and an error event), not a run the gateway would refuse call by call.
    task = Task(repo="acme/api", instructions="x", links={"options": {"model": asked}})
    run = Run(task_id=task.id)
    execution = Execution(SimpleNamespace(config=HandoffConfig()), task, run, asyncio.Event())  # type: ignore[arg-type]
    assert execution._model(Profile.model_validate(profile)) == runs
