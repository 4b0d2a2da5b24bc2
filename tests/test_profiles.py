"""Profiles that would open a way out of the sandbox are configuration errors, each with a clear
message: an open network bridge, a key or proxy in a profile's fixed environment, a gateway with no
model list, an allow-list entry that is not a domain name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import load_config
from core.errors import ConfigError


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
