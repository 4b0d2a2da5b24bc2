"""Slack's v0 request signature, checked on the raw bytes.

``v0=hex(HMAC-SHA256(secret, "v0:{timestamp}:" + body))`` over the body exactly as received, and
the timestamp within five minutes of now (a replayed request is refused). slack_sdk's verifier
decodes the body as UTF-8 first, so a signed body that is not UTF-8 raised instead of being read;
this one never looks inside the body.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

MAX_AGE_S = 300


class SlackSignature:
    """Verifies ``X-Slack-Signature`` / ``X-Slack-Request-Timestamp`` for one signing secret."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret.encode()
        self._clock = clock

    def valid(self, body: bytes, timestamp: str, signature: str) -> bool:
        """True when ``signature`` signs ``body`` at a fresh ``timestamp``."""
        if not timestamp.isdigit() or len(timestamp) > 12 or abs(self._clock() - int(timestamp)) > MAX_AGE_S:
            return False
        digest = hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
        return hmac.compare_digest(f"v0={digest.hexdigest()}", signature)
