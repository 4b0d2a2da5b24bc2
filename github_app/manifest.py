"""``handoff setup github``: register the GitHub App with the manifest flow — no keys copied by hand.

1. A local page (``http://127.0.0.1:<port>/``) posts ``app-manifest.yml`` (filled with
   ``HANDOFF_PUBLIC_URL``) and a random ``state`` to ``github.com/settings/apps/new`` (or an
   organisation's ``/organizations/<org>/settings/apps/new``).
2. GitHub sends the browser back to ``/callback?code=...&state=...``; the state must match.
3. ``POST /app-manifests/{code}/conversions`` (within the hour) returns the App id, slug, client id
   and secret, webhook secret and private key.
4. The key goes to a 0600 file and everything else to ``.env``.

The CLI calls :func:`run_setup` (see its docstring for the signature).
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
import webbrowser
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from githubkit import GitHub

DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "app-manifest.yml"


def build_manifest(
    public_url: str, redirect_url: str, path: Path = DEFAULT_MANIFEST, name: str | None = None
) -> dict[str, Any]:
    """The manifest JSON for ``public_url`` with its placeholders filled."""
    text = path.read_text(encoding="utf-8")
    text = text.replace("{public_url}", public_url.rstrip("/")).replace("{redirect_url}", redirect_url)
    manifest: dict[str, Any] = yaml.safe_load(text)
    if name:
        manifest["name"] = name
    return manifest


def new_app_url(web_url: str, org: str | None, state: str) -> str:
    """Where the manifest form posts: a personal or an organisation's new-App page."""
    base = web_url.rstrip("/")
    where = f"/organizations/{org}/settings/apps/new" if org else "/settings/apps/new"
    return f"{base}{where}?state={state}"


async def convert(code: str, api_url: str) -> dict[str, Any]:
    """Exchange the manifest ``code`` for the App's credentials (unauthenticated call)."""
    gh: GitHub[Any] = GitHub(base_url=api_url, auto_retry=False, http_cache=False)
    response = await gh.rest.apps.async_create_from_manifest(code)
    return dict(response.json())


def write_credentials(app: dict[str, Any], env_path: Path, key_dir: Path) -> dict[str, str]:
    """Store the private key (mode 0600) and the App's settings in ``env_path``; return what was set."""
    key_dir.mkdir(parents=True, exist_ok=True)
    key_file = key_dir / f"github-app-{app['id']}.pem"
    key_file.touch(mode=0o600, exist_ok=True)
    key_file.chmod(0o600)
    key_file.write_text(str(app["pem"]), encoding="utf-8")
    values = {
        "GITHUB_APP_ID": str(app["id"]),
        "GITHUB_APP_SLUG": str(app.get("slug") or ""),
        "GITHUB_CLIENT_ID": str(app.get("client_id") or ""),
        "GITHUB_CLIENT_SECRET": str(app.get("client_secret") or ""),
        "GITHUB_WEBHOOK_SECRET": str(app.get("webhook_secret") or ""),
        "GITHUB_PRIVATE_KEY_PATH": str(key_file.resolve()),
    }
    update_env(env_path, values)
    return values


def update_env(path: Path, values: dict[str, str]) -> None:
    """Set ``values`` in a ``.env`` file, replacing existing keys and keeping every other line."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    remaining = dict(values)
    out: list[str] = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if key in remaining:
            out.append(f"{key}={json.dumps(remaining.pop(key))}")
        else:
            out.append(line)
    out.extend(f"{k}={json.dumps(v)}" for k, v in remaining.items())
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    path.chmod(0o600)


def setup_app(
    manifest: dict[str, Any], *, web_url: str, api_url: str, org: str | None, env_path: Path, key_dir: Path
) -> tuple[FastAPI, asyncio.Future[dict[str, str]]]:
    """The local setup page and a future resolved with the written settings once the callback ran."""
    state = expected = secrets.token_urlsafe(24)
    done: asyncio.Future[dict[str, str]] = asyncio.get_event_loop().create_future()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def start() -> str:
        action = html.escape(new_app_url(web_url, org, state))
        where = f"the organisation <b>{html.escape(org)}</b>" if org else "your account"
        return (
            "<!doctype html><title>Handoff setup</title><h1>Register the Handoff GitHub App</h1>"
            f"<p>This creates a GitHub App for {where} and saves its keys to <code>{html.escape(str(env_path))}</code>.</p>"
            f'<form method="post" action="{action}"><input type="hidden" name="manifest" '
            f'value="{html.escape(json.dumps(manifest))}"><button type="submit">Create the GitHub App</button></form>'
        )

    @app.get("/callback", response_class=HTMLResponse)
    async def callback(request: Request) -> HTMLResponse:
        code = request.query_params.get("code", "")
        given = request.query_params.get("state", "")
        if not code or not secrets.compare_digest(given.encode(), expected.encode()):
            return HTMLResponse("<p>State mismatch: start again from the setup page.</p>", status_code=400)
        try:
            values = write_credentials(await convert(code, api_url), env_path, key_dir)
        except Exception as exc:  # shown to the person running setup, who can start again
            if not done.done():
                done.set_exception(exc)
            return HTMLResponse(
                f"<p>GitHub refused the exchange: {html.escape(str(exc))}</p>", status_code=502
            )
        if not done.done():
            done.set_result(values)
        slug = html.escape(values["GITHUB_APP_SLUG"])
        return HTMLResponse(
            f"<h1>Done</h1><p>App <b>{slug}</b> created; settings written to <code>{html.escape(str(env_path))}</code>."
            f' Now <a href="{html.escape(web_url.rstrip("/"))}/apps/{slug}/installations/new">install it</a>.</p>'
        )

    return app, done


async def run_setup(
    *,
    public_url: str,
    web_url: str = "https://github.com",
    api_url: str = "https://api.github.com",
    org: str | None = None,
    env_path: Path = Path(".env"),
    key_dir: Path = Path(".handoff"),
    host: str = "127.0.0.1",
    port: int = 3000,
    open_browser: bool = True,
    timeout_s: float = 3600.0,
    name: str | None = None,
) -> dict[str, str]:
    """Serve the setup page until GitHub's redirect has been exchanged; return the settings written.

    The CLI: ``handoff setup github [--org ORG] [--port 3000] [--name NAME]`` →
    ``asyncio.run(run_setup(public_url=settings.handoff_public_url, web_url=settings.github_web_url,
    api_url=settings.github_api_url, org=org, port=port, name=name))``.
    """
    local = f"http://{host}:{port}"
    manifest = build_manifest(public_url, f"{local}/callback", name=name)
    app, done = setup_app(
        manifest, web_url=web_url, api_url=api_url, org=org, env_path=env_path, key_dir=key_dir
    )
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        print(f"Open {local}/ to register the GitHub App.")
        if open_browser:
            webbrowser.open(f"{local}/")
        return await asyncio.wait_for(asyncio.shield(done), timeout_s)
    finally:
        server.should_exit = True
        await serving
