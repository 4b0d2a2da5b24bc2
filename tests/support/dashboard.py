"""The dashboard served for real: the whole app on a port chosen before it is built, and GitHub sign-in."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr

from core.models import Task
from core.settings import Settings
from core.tasks import NewTask
from tests.fakes.github_oauth import FakeGitHub
from tests.support.env import LiveServer, free_port


class Site(LiveServer):
    """The whole app on a port chosen before it is built, so its public URL can name that port."""

    def __init__(self, app: Any, port: int) -> None:
        super().__init__(app)
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )

    async def task(self, repo: str, text: str = "echo hi", **kwargs: Any) -> Task:
        """Create (and enqueue) a task through the task service."""
        created: tuple[Task, bool] = await self.app.state.services.tasks.create(
            NewTask(repo=repo, instructions=text, **kwargs)
        )
        return created[0]

    async def __aenter__(self) -> Site:
        await super().__aenter__()
        return self


@contextlib.asynccontextmanager
async def serve(settings: Settings, github: FakeGitHub | None = None, **changes: Any) -> AsyncIterator[Site]:
    """Serve ``create_app`` with the dashboard pointed at ``github`` (when given)."""
    from web.app import create_app

    port = free_port()
    update: dict[str, Any] = {"handoff_public_url": f"http://127.0.0.1:{port}", **changes}
    if github is not None:
        update |= {
            "github_client_id": github.client_id,
            "github_client_secret": SecretStr(github.client_secret),
            "github_web_url": github.url,
            "github_api_url": github.url,
        }
    async with Site(create_app(settings.model_copy(update=update)), port) as site:
        yield site


async def github_sign_in(client: httpx.AsyncClient) -> None:
    """Go through the whole OAuth web flow, following every redirect."""
    response = await client.get("/login/github", follow_redirects=True)
    assert response.status_code == 200, response.text
    assert response.url.path == "/tasks"
