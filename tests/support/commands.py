"""Mentions for command tests: a writer on a GitHub issue unless told otherwise."""

from __future__ import annotations

import uuid

from core.commands import Mention
from core.handlers import build_registry

REGISTRY = build_registry()


def mention(text: str, **kw: object) -> Mention:
    """A mention of ``text`` (``kw`` overrides any field)."""
    base: dict[str, object] = {
        "source": "github",
        "author": "alice",
        "text": text,
        "delivery_id": uuid.uuid4().hex,
        "target_key": "github:octo/demo#1",
        "repo": "octo/demo",
        "can_write": True,
    }
    base.update(kw)
    return Mention(**base)  # type: ignore[arg-type]
