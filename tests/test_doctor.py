"""``handoff doctor`` against real Redis, SQLite and Docker, with every integration on fakes that speak
the real wire formats (GitHub's REST API, Slack's Web API, the Anthropic and OpenAI APIs)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from rich.console import Console

from core.settings import Settings
from jobs.queue import ArqQueue
from tests.fakes.github_api import FakeGitHub
from tests.fakes.llm import API_KEY, OPENAI_KEY, FakeLLM
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.support.env import SANDBOX_IMAGE, LiveServer, running_worker, write_config
from tests.support.github import rsa_keys
from web.doctor import run_doctor
from web.health import last_worker_beat

PUBLIC = "https://handoff.example.com"


async def doctor(settings: Settings) -> tuple[bool, str]:
    """Run the doctor; return (passed, what it printed)."""
    out = io.StringIO()
    ok = await run_doctor(settings, Console(file=out, width=250, color_system=None))
    return ok, out.getvalue()


def line(out: str, name: str) -> str:
    """The doctor's line for the check called ``name``."""
    return next(row for row in out.splitlines() if row[5:].startswith(name + " "))


@dataclass
class Fakes:
    settings: Settings
    github: FakeGitHub


@pytest.fixture
async def everything(sqlite_settings: Settings, tmp_path: Path) -> AsyncIterator[Fakes]:
    """Settings with GitHub, Slack (HTTP and Socket Mode) and both model providers on fakes."""
    private, public = rsa_keys()
    github = FakeGitHub(4242, public)
    slack = FakeSlack()
    llm = FakeLLM()
    async with LiveServer(github.app) as gh, LiveServer(slack.app) as sl, LiveServer(llm.app) as model:
        slack.bind(sl.url)
        settings = sqlite_settings.model_copy(
            update={
                "handoff_public_url": PUBLIC,
                "github_app_id": "4242",
                "github_private_key": SecretStr(private),
                "github_webhook_secret": SecretStr("s3cret"),
                "github_api_url": gh.url,
                "github_app_slug": "handoff",
                "slack_bot_token": SecretStr(BOT_TOKEN),
                "slack_signing_secret": SecretStr(SIGNING_SECRET),
                "slack_app_token": SecretStr(APP_TOKEN),
                "slack_api_url": slack.api_url,
                "anthropic_api_key": SecretStr(API_KEY),
                "anthropic_base_url": model.url,
                "openai_api_key": SecretStr(OPENAI_KEY),
                "openai_base_url": f"{model.url}/v1",
            }
        )
        yield Fakes(settings, github)
        assert github.errors == [], github.errors


async def test_nothing_configured_is_off_not_failed(sqlite_settings: Settings) -> None:
    ok, out = await doctor(sqlite_settings)
    assert ok, out
    assert line(out, "github").startswith("off") and "handoff setup github" in line(out, "github")
    assert line(out, "slack").startswith("off") and "SLACK_BOT_TOKEN" in line(out, "slack")
    assert line(out, "model key anthropic").startswith("off")
    assert line(out, "model key openai").startswith("off")
    assert line(out, f"image {SANDBOX_IMAGE}").startswith("ok")
    # No worker has reported on this test's own queue: a warning, not a failure.
    assert line(out, "worker").startswith("warn") and "handoff worker" in line(out, "worker")
    assert line(out, "public URL").startswith("ok") and "local only" in line(out, "public URL")
    assert out.rstrip().endswith("no problems found")
    queue = ArqQueue(sqlite_settings.redis_url, sqlite_settings.handoff_queue_name)
    async with running_worker(sqlite_settings):
        deadline = time.monotonic() + 30  # the worker reports once its start-up is done
        while await last_worker_beat(queue) is None:
            assert time.monotonic() < deadline, "the worker never reported"
            await asyncio.sleep(0.2)
        ok, out = await doctor(sqlite_settings)
    await queue.close()
    assert line(out, "worker").startswith("ok") and "reported" in line(out, "worker")


async def test_every_integration_is_checked_for_real(everything: Fakes) -> None:
    ok, out = await doctor(everything.settings)
    assert ok, out
    assert "ok   github key" in out and "ok   github app" in out and "(handoff, id 4242)" in out
    assert line(out, "github webhook URL").startswith("ok") and f"{PUBLIC}/github/webhooks" in out
    assert "ok   slack token" in out and "ok   slack scopes" in out and "ok   slack socket mode" in out
    assert "ok   model key anthropic" in out and "claude-test" in line(out, "model key anthropic")
    assert "ok   model key openai" in out and "gpt-test" in line(out, "model key openai")
    assert "FAIL" not in out


@pytest.mark.parametrize(
    ("change", "name", "says"),
    [
        ({"github_app_id": "999"}, "github app", "GITHUB_APP_ID"),
        ({"github_private_key": SecretStr("not a key")}, "github key", "PEM"),
        ({"github_webhook_secret": None}, "github webhook secret", "GITHUB_WEBHOOK_SECRET"),
        ({"handoff_public_url": "https://elsewhere.example.com"}, "github webhook URL", "elsewhere"),
        ({"handoff_public_url": "http://localhost:8000"}, "github webhook URL", "local name"),
        ({"github_app_slug": "other"}, "github app slug", "other"),
        ({"slack_bot_token": SecretStr("xoxb-wrong")}, "slack token", "invalid_auth"),
        ({"slack_app_token": SecretStr("xoxb-not-app-level")}, "slack socket mode", "xapp-"),
        ({"anthropic_api_key": SecretStr("sk-ant-wrong")}, "model key anthropic", "refused (401)"),
        ({"openai_api_key": SecretStr("sk-wrong")}, "model key openai", "refused (401)"),
        ({"openai_base_url": "http://127.0.0.1:9/v1"}, "model key openai", "cannot reach"),
    ],
    ids=[
        "jwt-refused",
        "key-not-pem",
        "no-webhook-secret",
        "webhook-url-mismatch",
        "webhook-url-local",
        "slug-mismatch",
        "slack-token",
        "socket-token",
        "anthropic-key",
        "openai-key",
        "openai-unreachable",
    ],
)
async def test_a_broken_integration_fails_with_what_to_do(
    everything: Fakes, change: dict[str, object], name: str, says: str
) -> None:
    ok, out = await doctor(everything.settings.model_copy(update=change))
    assert not ok
    assert line(out, name).startswith("FAIL") and says in line(out, name), out
    assert f"problem(s): {name}" in out or f", {name}" in out


async def test_images_and_keys_each_profile_needs(sqlite_settings: Settings, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "profiles.yml",
        profiles={
            "shell": {"image": SANDBOX_IMAGE},
            "claude": {
                "image": "handoff-agent:doctor-test",
                "api_key_env": "ANTHROPIC_API_KEY",
                "model": "claude-test",
            },
            "gpt": {"kind": "builtin", "provider": "openai", "model": "gpt-test", "image": SANDBOX_IMAGE},
        },
    )
    ok, out = await doctor(sqlite_settings.model_copy(update={"handoff_config": config}))
    assert not ok
    image = line(out, "image handoff-agent:doctor-test")
    assert image.startswith("FAIL") and "profile claude" in image
    assert "docker build -f docker/agents/doctor-test.Dockerfile -t handoff-agent:doctor-test ." in image
    assert line(out, f"image {SANDBOX_IMAGE}").startswith("ok") and "profiles gpt, shell" in out
    assert line(out, "model key anthropic").startswith("FAIL") and "claude need it" in out
    assert line(out, "model key openai").startswith("FAIL") and "gpt need it" in out
