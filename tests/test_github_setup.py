"""Onboarding and operations: the manifest flow, `handoff replay`, the redelivery reconciler."""

from __future__ import annotations

import asyncio
import html
import json
import re
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from github_app.manifest import build_manifest, run_setup
from github_app.replay import replay
from tests.fakes.github_api import FakeGitHub
from tests.support.env import LiveServer, free_port
from tests.support.github import APP_ID, SECRET, github_world, handoff_api, rsa_keys

PG = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def test_manifest_is_filled_from_the_public_url() -> None:
    manifest = build_manifest("https://handoff.example.com/", "http://127.0.0.1:3000/callback")
    assert manifest["hook_attributes"]["url"] == "https://handoff.example.com/github/webhooks"
    assert manifest["redirect_url"] == "http://127.0.0.1:3000/callback"
    assert manifest["default_permissions"]["checks"] == "write"
    assert {"issues", "issue_comment", "check_run"} <= set(manifest["default_events"])


async def test_setup_flow_exchanges_the_code_and_writes_env(tmp_path: Path) -> None:
    private, public = rsa_keys()
    fake = FakeGitHub(APP_ID, public)
    fake.manifest_codes["c0de"] = {
        "id": 123456,
        "slug": "handoff-acme",
        "name": "Handoff",
        "client_id": "Iv1.abc",
        "client_secret": "shh",
        "webhook_secret": "whsec",
        "pem": private,
        "owner": {"login": "acme"},
    }
    env = tmp_path / ".env"
    env.write_text("DATABASE_URL=sqlite:///x.db\nGITHUB_APP_ID=old\n")
    port = free_port()
    async with LiveServer(fake.app) as gh:
        setup = asyncio.create_task(
            run_setup(
                public_url="https://handoff.example.com",
                web_url="https://github.com",
                api_url=gh.url,
                org="acme",
                env_path=env,
                key_dir=tmp_path / "keys",
                port=port,
                open_browser=False,
                timeout_s=30,
            )
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as browser:
            page = ""
            for _ in range(100):
                try:
                    page = (await browser.get("/")).text
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))  # type: ignore[union-attr]
            manifest = json.loads(html.unescape(re.search(r'name="manifest" value="([^"]+)"', page).group(1)))  # type: ignore[union-attr]
            assert action.startswith("https://github.com/organizations/acme/settings/apps/new?state=")
            assert manifest["hook_attributes"]["url"] == "https://handoff.example.com/github/webhooks"
            state = action.split("state=")[1]
            assert (
                await browser.get("/callback", params={"code": "c0de", "state": "forged"})
            ).status_code == 400
            done = await browser.get("/callback", params={"code": "c0de", "state": state})
            assert done.status_code == 200 and "handoff-acme" in done.text
        values = await setup
    text = env.read_text()
    assert (
        'GITHUB_APP_ID="123456"' in text and "GITHUB_APP_ID=old" not in text and "DATABASE_URL=sqlite" in text
    )
    assert 'GITHUB_WEBHOOK_SECRET="whsec"' in text and "BEGIN" not in text
    key = Path(values["GITHUB_PRIVATE_KEY_PATH"])
    assert key.read_text() == private and key.stat().st_mode & 0o777 == 0o600
    assert fake.errors == []


@PG
async def test_replay_signs_and_posts_a_recorded_payload(settings: Settings, tmp_path: Path) -> None:
    async with github_world(settings, tmp_path) as world, handoff_api(world):
        recorded = tmp_path / "issue_comment.created.json"
        recorded.write_text(
            json.dumps(world.payload("issue_comment", "created", comment={"body": "/handoff help"}))
        )
        response = await asyncio.to_thread(
            replay, f"{world.api_url}/github/webhooks", recorded, SECRET, delivery="replayed-1"
        )
        again = await asyncio.to_thread(
            replay, f"{world.api_url}/github/webhooks", recorded, SECRET, delivery="replayed-1"
        )
        wrong = await asyncio.to_thread(replay, f"{world.api_url}/github/webhooks", recorded, "nope")
        assert (response.status_code, again.status_code, wrong.status_code) == (202, 200, 401)
        assert (await world.deliveries())["replayed-1"].event == "issue_comment.created"


@PG
async def test_reconciler_redelivers_missed_deliveries_once(settings: Settings, tmp_path: Path) -> None:
    from github_app.integration import build_integration
    from jobs.services import build_services

    def item(id_: int, guid: str, status: int, redelivery: bool = False) -> dict[str, object]:
        return {
            "id": id_,
            "guid": guid,
            "delivered_at": "2099-01-01T00:00:00Z",
            "redelivery": redelivery,
            "duration": 0.1,
            "status": "OK" if status < 400 else "failed",
            "status_code": status,
            "event": "issue_comment",
            "action": "created",
            "installation_id": 77,
            "repository_id": 1,
        }

    async with github_world(settings, tmp_path) as world, handoff_api(world) as client:
        world.fake.hook_deliveries = [
            item(1, "g-ok", 202),
            item(2, "g-missed", 502),
            item(3, "g-handled", 500),
            item(4, "g-fixed", 500),
            item(5, "g-fixed", 202, redelivery=True),
            item(6, "g-timeout", 0),
        ]
        await world.send(client, "ping", {"zen": "x", "hook_id": 1}, delivery="g-handled")
        services = build_services(world.settings)
        try:
            reconciler = build_integration(world.settings, services).reconciler
            assert reconciler is not None
            first = await reconciler.reconcile()
            second = await reconciler.reconcile()
        finally:
            await services.close()
    assert sorted(first) == ["g-missed", "g-timeout"] and second == []
    assert sorted(world.fake.redelivered) == [2, 6]
