"""``handoff doctor`` for the model providers: each key set is tried with one cheap authenticated
call (listing models costs no tokens), and each profile that needs a key is checked to have one."""

from __future__ import annotations

import anthropic
import openai

from core.checks import Check
from core.config import HandoffConfig
from core.settings import Settings
from jobs.agent.anthropic_llm import DEFAULT_BASE_URL as ANTHROPIC_URL
from jobs.agent.openai_llm import DEFAULT_BASE_URL as OPENAI_URL

KEY_VARS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


def _users(config: HandoffConfig, provider: str) -> list[str]:
    """Profiles that need ``provider``'s key: built-in agents on it, CLIs that are passed its key."""
    var = KEY_VARS[provider]
    return [
        name
        for name, p in config.profiles.items()
        if (p.kind == "builtin" and p.provider == provider) or (p.kind == "command" and p.api_key_env == var)
    ]


async def _anthropic(key: str, base_url: str | None) -> str:
    client = anthropic.AsyncAnthropic(
        api_key=key, base_url=base_url or ANTHROPIC_URL, max_retries=0, timeout=10
    )
    try:
        page = await client.models.list(limit=5)
        return ", ".join(m.id for m in page.data) or "no models listed"
    finally:
        await client.close()


async def _openai(key: str, base_url: str | None) -> str:
    client = openai.AsyncOpenAI(api_key=key, base_url=base_url or OPENAI_URL, max_retries=0, timeout=10)
    try:
        page = await client.models.list()
        return ", ".join(m.id for m in page.data[:5]) or "no models listed"
    finally:
        await client.close()


async def check_models(settings: Settings, config: HandoffConfig) -> list[Check]:
    """One row per provider: off, ok (the key works), or fail (refused, unreachable, or needed)."""
    rows: list[Check] = []
    for provider, key, base_url, probe in (
        ("anthropic", settings.anthropic_api_key, settings.anthropic_base_url, _anthropic),
        ("openai", settings.openai_api_key, settings.openai_base_url, _openai),
    ):
        users = _users(config, provider)
        name = f"model key {provider}"
        # A local OpenAI-compatible server (vLLM, Ollama) may need no key at all.
        keyless = provider == "openai" and key is None and base_url is not None
        if key is None and not keyless:
            if users:
                rows.append(
                    Check.fail(
                        name, f"{KEY_VARS[provider]} is not set; profile(s) {', '.join(users)} need it"
                    )
                )
            else:
                rows.append(Check.off(name, f"not configured ({KEY_VARS[provider]})"))
            continue
        try:
            models = await probe(key.get_secret_value() if key else "not-needed", base_url)
        except (anthropic.AuthenticationError, openai.AuthenticationError) as exc:
            rows.append(
                Check.fail(name, f"the key was refused ({exc.status_code}): check {KEY_VARS[provider]}")
            )
        except (anthropic.APIStatusError, openai.APIStatusError) as exc:
            rows.append(Check.fail(name, f"listing models answered {exc.status_code}: {exc.message}"))
        except (anthropic.APIConnectionError, openai.APIConnectionError) as exc:
            where = base_url or (ANTHROPIC_URL if provider == "anthropic" else OPENAI_URL)
            rows.append(Check.fail(name, f"cannot reach {where}: {exc}"))
        else:
            used = f"; used by {', '.join(users)}" if users else ""
            rows.append(Check.ok(name, f"the key works (models: {models}){used}"))
    return rows
