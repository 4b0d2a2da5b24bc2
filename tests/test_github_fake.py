"""The fake GitHub refuses what GitHub refuses, or the GitHub tests prove nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes.github_api import FakeGitHub
from tests.support.env import LiveServer
from tests.support.github import APP_ID, INSTALLATION, REPO, rsa_keys


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"name": "Handoff", "head_sha": "a" * 40, "status": "bogus"}, "not in"),
        ({"name": "Handoff"}, "missing required 'head_sha'"),
        (
            {
                "name": "Handoff",
                "head_sha": "a",
                "actions": [{"label": "x", "description": "y", "identifier": "z"}] * 4,
            },
            "more than 3",
        ),
        ({"name": "Handoff", "head_sha": "a", "output": {"title": "t", "summary": "s" * 65_536}}, "65535"),
        ({"name": "Handoff", "head_sha": "a", "colour": "red"}, "unknown property"),
    ],
    ids=["bad-enum", "missing-required", "four-actions", "summary-too-long", "unknown-field"],
)
async def test_fake_refuses_what_github_refuses(body: dict[str, Any], problem: str) -> None:
    private, public = rsa_keys()
    fake = FakeGitHub(APP_ID, public)
    fake.installations.add(INSTALLATION)
    async with LiveServer(fake.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        minted = await _mint(client, private)
        response = await client.post(
            f"/repos/{REPO}/check-runs", json=body, headers={"Authorization": f"token {minted}"}
        )
    assert response.status_code == 422
    assert problem in fake.errors[0]


async def test_fake_checks_auth_and_token_scope() -> None:
    private, public = rsa_keys()
    fake = FakeGitHub(APP_ID, public)
    fake.installations.add(INSTALLATION)
    async with LiveServer(fake.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        token = await _mint(client, private)
        bad_jwt = await client.post(
            f"/app/installations/{INSTALLATION}/access_tokens", headers={"Authorization": "Bearer nope"}
        )
        other = await client.get(
            "/repos/acme/other/collaborators/x/permission", headers={"Authorization": f"token {token}"}
        )
        ok = await client.get(
            f"/repos/{REPO}/collaborators/x/permission", headers={"Authorization": f"token {token}"}
        )
    assert bad_jwt.status_code == 401 and other.status_code == 403 and ok.status_code == 200
    assert fake.tokens[token]["repositories"] == ["widgets"]


async def _mint(client: httpx.AsyncClient, private: str) -> str:
    from github_app.auth import AppJWT

    response = await client.post(
        f"/app/installations/{INSTALLATION}/access_tokens",
        json={"repositories": ["widgets"], "permissions": {"checks": "write"}},
        headers={"Authorization": f"Bearer {AppJWT(str(APP_ID), private).get()}"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])
