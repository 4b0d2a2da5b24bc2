"""``handoff doctor`` for Slack: is the bot token valid (``auth.test``), and are the scopes granted?

Returns rows in the shape ``web/doctor.py`` prints: ``(name, ok, detail)``.
"""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.app import make_client
from bot.config import load_slack_config
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
    }
)
GROUP_SCOPE = "usergroups:read"  # only when the allow-list names user groups

Check = tuple[str, bool, str]


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
        return [("slack", True, "not configured (set SLACK_BOT_TOKEN to enable the bot)")]
    rows: list[Check] = []
    if settings.slack_signing_secret is None and settings.slack_app_token is None:
        rows.append(
            ("slack receiving", False, "set SLACK_SIGNING_SECRET (HTTP) or SLACK_APP_TOKEN (Socket Mode)")
        )
    app_token = settings.slack_app_token
    if app_token is not None and not app_token.get_secret_value().startswith("xapp-"):
        rows.append(("slack app token", False, "SLACK_APP_TOKEN must be an app-level token (xapp-...)"))
    client = make_client(settings)
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else exc
        return [*rows, ("slack token", False, f"auth.test failed: {error} — check SLACK_BOT_TOKEN")]
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [*rows, ("slack token", False, f"cannot reach {settings.slack_api_url}: {exc}")]
    rows.append(
        ("slack token", True, f"bot {auth.get('user')} in {auth.get('team')} ({auth.get('team_id')})")
    )
    header = auth.headers.get("x-oauth-scopes") or auth.headers.get("X-OAuth-Scopes") or ""
    granted = {s.strip() for s in str(header).split(",") if s.strip()}
    missing = sorted(required_scopes(settings) - granted)
    if missing:
        rows.append(
            (
                "slack scopes",
                False,
                f"missing {', '.join(missing)} — add them under OAuth & Permissions "
                "(or re-paste slack-manifest.yml) and reinstall the app",
            )
        )
    else:
        rows.append(("slack scopes", True, f"{len(granted)} granted, none missing"))
    return rows
