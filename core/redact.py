"""Secret redaction: one pure function applied to everything Handoff writes or posts.

Run events, logs, GitHub comments and Slack messages can all quote what an agent saw — a token in
an environment dump, a key in a config file, a URL with credentials. Everything that leaves the
worker goes through :func:`redact` (or a :class:`Redactor` built once with the deployment's own
``secret_patterns`` and the secret values it knows), which replaces

* known token shapes: GitHub (``ghp_``, ``ghs_``, ``gho_``, ``ghu_``, ``ghr_``, ``github_pat_``),
  Slack (``xoxb-``, ``xoxp-``, ``xapp-`` ...), Anthropic (``sk-ant-``), OpenAI (``sk-...``), AWS
  access key ids, JWTs, PEM private keys;
* credentials in URLs (``https://user:pass@host``) and in ``Authorization:`` headers;
* every configured pattern (a regex; when it has a group named ``secret`` only that group goes);
* exact secret values given as literals (keys from the settings, which may have no known shape).

The replacement is :data:`MASK`. Redaction is best effort by nature: it catches what looks like a
secret, so it is a second line of defence behind never handing secrets to the sandbox at all.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

MASK = "[REDACTED]"
#: Shorter literal values are not redacted: masking "abc" everywhere would garble the text.
MIN_LITERAL = 8

# (name, regex); a group named ``secret`` limits the replacement to that part of the match.
BUILTIN_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "private-key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    ),
    # New installation tokens are ``ghs_<app id>_<JWT>``: dots and dashes, no fixed length.
    ("github-token", r"\bgh[pousr]_[A-Za-z0-9_.\-]{16,}"),
    ("github-pat", r"\bgithub_pat_[A-Za-z0-9_]{16,}"),
    ("slack-token", r"\bxox[abposre]-[A-Za-z0-9\-]{8,}"),
    ("slack-app-token", r"\bxapp-[A-Za-z0-9\-]{8,}"),
    ("anthropic-key", r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openai-key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("aws-access-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("url-credentials", r"://(?P<secret>[^/@\s:]+:[^/@\s]+)@"),
    (
        "auth-header",
        r"(?i)\b(?:proxy-)?authorization:\s*(?:bearer|basic|token|bot)?\s*(?P<secret>[^\s'\"]{6,})",
    ),
)


def compile_patterns(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    """Compile configured patterns; raise ``ValueError`` naming the first invalid one."""
    compiled: list[re.Pattern[str]] = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ValueError(f"secret pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    return compiled


_BUILTIN = [re.compile(regex) for _name, regex in BUILTIN_PATTERNS]


class Redactor:
    """Redacts built-in token shapes, configured patterns and known secret values."""

    def __init__(self, patterns: Iterable[str] = (), literals: Iterable[str | None] = ()) -> None:
        """``patterns`` are regexes (``ValueError`` if invalid); ``literals`` exact secret values."""
        self._patterns = [*_BUILTIN, *compile_patterns(patterns)]
        values = sorted({v for v in literals if v and len(v) >= MIN_LITERAL}, key=len, reverse=True)
        # One alternation, longest first, so a value that contains another is masked whole.
        self._literals = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced by :data:`MASK`."""
        if not text:
            return text
        if self._literals is not None:
            text = self._literals.sub(MASK, text)
        for pattern in self._patterns:
            text = pattern.sub(_replace, text)
        return text

    def data(self, value: Any) -> Any:
        """``value`` with every string inside it (dicts, lists, tuples) redacted; keys are kept."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {key: self.data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        return value


def _replace(match: re.Match[str]) -> str:
    if "secret" in match.re.groupindex and match.group("secret") is not None:
        start, end = match.span("secret")
        whole_start = match.start()
        text = match.group(0)
        return text[: start - whole_start] + MASK + text[end - whole_start :]
    return MASK


@lru_cache(maxsize=32)
def _cached(patterns: tuple[str, ...]) -> Redactor:
    return Redactor(patterns)


def redact(text: str, patterns: Iterable[str] = ()) -> str:
    """``text`` with known token shapes and ``patterns`` (regexes) replaced by :data:`MASK`."""
    return _cached(tuple(patterns))(text)


def redact_data(value: Any, patterns: Iterable[str] = ()) -> Any:
    """Like :func:`redact` for every string inside ``value`` (dicts, lists)."""
    return _cached(tuple(patterns)).data(value)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (arguments merged in) and exception.

    Install it on the handlers of a process (:func:`install_log_redaction`) so that a token in an
    error message never reaches the log.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        record.msg, record.args = self.redactor(message), None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = self.redactor(text)
            record.exc_info = None
        return True


def install_log_redaction(redactor: Redactor, logger: logging.Logger | None = None) -> RedactingFilter:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger)."""
    target = logger or logging.getLogger()
    flt = RedactingFilter(redactor)
    for handler in target.handlers:
        handler.addFilter(flt)
    return flt
