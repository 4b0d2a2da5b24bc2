"""Webhook signatures: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.

Only the SHA-256 header is accepted: githubkit's ``verify()`` silently falls back to SHA-1 when the
value lacks the ``sha256=`` prefix, and a SHA-1-only delivery must be refused. Every configured
secret is tried (rotation) and every comparison runs, so timing tells nothing about which matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HEADER = "x-hub-signature-256"
_PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header value GitHub sends for ``body`` signed with ``secret``."""
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secrets: Sequence[str], body: bytes, header: str | None) -> bool:
    """True when ``header`` is a valid SHA-256 signature of ``body`` under one of ``secrets``."""
    if not header or not header.startswith(_PREFIX) or not secrets:
        return False
    given = header[len(_PREFIX) :].strip().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        # No short-circuit: the comparison count does not depend on which secret matched.
        matched |= hmac.compare_digest(expected, given)
    return matched
