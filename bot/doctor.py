"""``handoff doctor`` for Slack: the bot token (``auth.test``), the scopes it was granted, the signing
secret is set for HTTP events, and the Socket Mode token (``apps.connections.open``, which opens nothing by itself).
"""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.client import make_client
from bot.config import load_slack_config
from core.checks import Check
from core.errors import ConfigError
from core.settings import Settings

# Keep in step with slack-manifest.yml (a test checks that they agree).
REQUIRED_SCOPES = frozenset(
    {
        "app_mentions:read",  # @Handoff in channels
        "channels:history",  # replies in a task's thread (public channels)
        "groups:history",  # ... and private channels
        "im:history",  # direct messages
        "chat:write",  # status messages and replies
        "commands",  # /handoff
        "reactions:write",  # 👀 / ✅ / ❌ on the message that asked
        "channels:join",  # post a slash command's thread in a public channel the bot is not in
        "users:read",  # names of people mentioned in a request (<@U123> becomes @name)
    }
)
GROUP_SCOPE = "usergroups:read"  # only when the allow-list names user groups


def required_scopes(settings: Settings) -> set[str]:
    """The scopes this configuration needs."""
    needed = set(REQUIRED_SCOPES)
    try:
        config = load_slack_config(settings.handoff_config)
    except ConfigError:
        return needed
    if any(rule.usergroups for rule in config.allow):
        needed.add(GROUP_SCOPE)
    return needed


async def check_slack(settings: Settings) -> list[Check]:
    """One row per check; an unconfigured Slack is reported, not failed."""
    if settings.slack_bot_token is None:
        return [Check.off("slack", "not configured (set SLACK_BOT_TOKEN to enable the bot)")]
    rows: list[Check] = []
    if settings.slack_signing_secret is None and settings.slack_app_token is None:
        rows.append(
            Check.fail("slack receiving", "set SLACK_SIGNING_SECRET (HTTP) or SLACK_APP_TOKEN (Socket Mode)")
        )
    client = make_client(settings)
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else exc
        return [*rows, Check.fail("slack token", f"auth.test failed: {error} — check SLACK_BOT_TOKEN")]
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [*rows, Check.fail("slack token", f"cannot reach {settings.slack_api_url}: {exc}")]
    rows.append(
        Check.ok("slack token", f"bot {auth.get('user')} in {auth.get('team')} ({auth.get('team_id')})")
    )
    header = auth.headers.get("x-oauth-scopes") or auth.headers.get("X-OAuth-Scopes") or ""
    granted = {s.strip() for s in str(header).split(",") if s.strip()}
    missing = sorted(required_scopes(settings) - granted)
    if missing:
        rows.append(
            Check.fail(
                "slack scopes",
                f"missing {', '.join(missing)} — add them under OAuth & Permissions "
                "(or re-paste slack-manifest.yml) and reinstall the app",
            )
        )
    else:
        rows.append(Check.ok("slack scopes", f"{len(granted)} granted, none missing"))
    rows.append(await _check_socket_token(settings))
    return rows


async def _check_socket_token(settings: Settings) -> Check:
    token = settings.slack_app_token
    if token is None:
        return Check.off("slack socket mode", "off (HTTP events; SLACK_APP_TOKEN turns Socket Mode on)")
    if not token.get_secret_value().startswith("xapp-"):
        return Check.fail("slack socket mode", "SLACK_APP_TOKEN must be an app-level token (xapp-...)")
    client = make_client(settings)
    try:
        await client.apps_connections_open(app_token=token.get_secret_value())
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else exc
        return Check.fail(
            "slack socket mode",
            f"apps.connections.open failed: {error} — check SLACK_APP_TOKEN (scope connections:write)",
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check.fail("slack socket mode", f"cannot reach {settings.slack_api_url}: {exc}")
    return Check.ok("slack socket mode", "the app-level token opens connections")
