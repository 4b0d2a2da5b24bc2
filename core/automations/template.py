"""Instructions templates and dedupe keys: ``{field}`` placeholders filled from the event.

Only the names in :data:`FIELDS` exist (a typo is refused when the rule is validated, not when an
event arrives). Fields people write — titles, bodies, branch names, logins — reach the agent fenced
as untrusted data (:func:`fence`): a pull request's title cannot become an instruction. ``{{`` and
``}}`` are literal braces. Nothing is evaluated: a placeholder is a name looked up in a dict, never
an attribute access or a format spec.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# name -> written by people (fenced for the agent) or by GitHub/Handoff (used as is).
FIELDS: dict[str, bool] = {
    "rule": False,
    "repo": False,
    "event": False,
    "date": False,
    "number": False,
    "head_sha": False,
    "conclusion": False,
    "sender": True,
    "author": True,
    "title": True,
    "body": True,
    "head_ref": True,
    "base_ref": True,
    "workflow": True,
}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z_]+)\}|\{|\}")
UNTRUSTED_TAG = "untrusted-data"


def fence(text: str, source: str) -> str:
    """``text`` fenced as untrusted data (a closing tag inside it cannot end the fence)."""
    safe = text.replace(f"</{UNTRUSTED_TAG}", f"<\\/{UNTRUSTED_TAG}")
    return f'<{UNTRUSTED_TAG} source="{source}">\n{safe}\n</{UNTRUSTED_TAG}>'


def placeholders(template: str) -> list[str]:
    """The field names ``template`` uses; ``ValueError`` for unknown ones and stray braces."""
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise ValueError(f"a lone {token!r}: write {token * 2} for a literal brace")
        if name not in FIELDS:
            raise ValueError(f"unknown field {{{name}}} (fields: {', '.join(sorted(FIELDS))})")
        names.append(name)
    return names


@dataclass(frozen=True)
class Rendered:
    """A filled template: the text for the agent, and the same without fences (for keys, display)."""

    text: str
    plain: str


def render(template: str, values: Mapping[str, str]) -> Rendered:
    """Fill ``template`` (already checked by :func:`placeholders`) from ``values``."""
    fenced: list[str] = []
    plain: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        literal = template[last : match.start()]
        fenced.append(literal)
        plain.append(literal)
        last = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            fenced.append(token[0])
            plain.append(token[0])
            continue
        name = match.group(1) or ""
        value = values.get(name, "")
        plain.append(value)
        fenced.append(fence(value, name) if FIELDS.get(name) and value else value)
    fenced.append(template[last:])
    plain.append(template[last:])
    return Rendered("".join(fenced), "".join(plain))
