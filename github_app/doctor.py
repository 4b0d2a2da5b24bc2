"""``handoff doctor`` for the GitHub App: the private key parses, GitHub accepts the App's JWT
(``GET /app``), and GitHub sends webhooks to this server's public URL (``GET /app/hook/config``)."""

from __future__ import annotations

import httpx
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from core.checks import Check, public_url_problem
from core.errors import ConfigError
from core.settings import Settings
from github_app.auth import AppJWT
from github_app.integration import private_key

WEBHOOK_PATH = "/github/webhooks"


def _headers(jwt: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {jwt}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }


async def check_github(settings: Settings) -> list[Check]:
    """One row per check; an App that is not configured is reported, not failed."""
    if not settings.github_app_id:
        return [Check.off("github", "not configured (`handoff setup github` creates and connects an App)")]
    rows: list[Check] = []
    if not settings.github_webhook_secrets:
        rows.append(
            Check.fail("github webhook secret", "GITHUB_WEBHOOK_SECRET is not set: webhooks are refused")
        )
    try:
        pem = private_key(settings)
        load_pem_private_key(pem.encode(), password=None)
    except ConfigError as exc:
        return [*rows, Check.fail("github key", str(exc))]
    except (ValueError, TypeError) as exc:
        return [*rows, Check.fail("github key", f"the private key does not parse as PEM: {exc}")]
    rows.append(Check.ok("github key", "the private key parses"))
    jwt = AppJWT(settings.github_app_id, pem).get()
    api = settings.github_api_url.rstrip("/")
    async with httpx.AsyncClient(base_url=api, headers=_headers(jwt), timeout=10) as client:
        try:
            app = await client.get("/app")
        except httpx.HTTPError as exc:
            return [*rows, Check.fail("github app", f"cannot reach {api}: {type(exc).__name__} {exc}")]
        if app.status_code != 200:
            return [
                *rows,
                Check.fail(
                    "github app",
                    f"GET /app answered {app.status_code}: GitHub refused the App's JWT — check "
                    "GITHUB_APP_ID, the key, and the clock of this machine",
                ),
            ]
        body = app.json()
        rows.append(Check.ok("github app", f"{body.get('name')} ({body.get('slug')}, id {body.get('id')})"))
        if settings.github_app_slug and body.get("slug") and body["slug"] != settings.github_app_slug:
            rows.append(
                Check.fail(
                    "github app slug",
                    f"GITHUB_APP_SLUG is {settings.github_app_slug} but the App is {body['slug']}: "
                    "mentions of @{slug} would be missed",
                )
            )
        try:
            hook = await client.get("/app/hook/config")
        except httpx.HTTPError as exc:
            hook = None
            rows.append(Check.warn("github webhook URL", f"cannot read the App's webhook settings: {exc}"))
    expected = settings.handoff_public_url.rstrip("/") + WEBHOOK_PATH
    problem = public_url_problem(expected)
    if problem is not None:
        rows.append(
            Check.fail(
                "github webhook URL",
                f"HANDOFF_PUBLIC_URL points GitHub at {expected}, but {problem}: set it to the URL "
                "GitHub can reach (a reverse proxy with TLS or a tunnel)",
            )
        )
    elif hook is not None and hook.status_code == 200:
        actual = str(hook.json().get("url") or "")
        if actual.rstrip("/") != expected:
            rows.append(
                Check.fail(
                    "github webhook URL",
                    f"GitHub sends webhooks to {actual or 'nowhere'} but this server takes them at "
                    f"{expected}: fix the App's webhook URL (Settings → Developer settings) or HANDOFF_PUBLIC_URL",
                )
            )
        else:
            rows.append(Check.ok("github webhook URL", f"GitHub sends webhooks to {actual}"))
    elif hook is not None:
        rows.append(Check.warn("github webhook URL", f"GET /app/hook/config answered {hook.status_code}"))
    if settings.github_client_id and settings.github_client_secret:
        rows.append(Check.ok("github sign-in", "OAuth client id and secret set (dashboard sign-in)"))
    else:
        rows.append(
            Check.off("github sign-in", "GITHUB_CLIENT_ID/SECRET unset: only the local token signs in")
        )
    return rows
