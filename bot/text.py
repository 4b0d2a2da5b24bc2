"""Slack's message markup back to the text the person typed, before it becomes instructions.

Slack sends message and slash-command text HTML-escaped (``&`` → ``&amp;``, ``<`` → ``&lt;``,
``>`` → ``&gt;``) and with its own markup in angle brackets: ``<@U123>`` (a person), ``<#C123|name>``
(a channel), ``<!here>``, ``<!subteam^S123|@team>``, ``<!date^…|fallback>``, and links as
``<https://x|label>`` — including the ones Slack made by itself from what looked like a domain
(``README.md`` arrives as ``<http://README.md|README.md>``). Left as they are, ``echo hi &gt; HI.md``
runs literally and a file name becomes a URL; :func:`to_plain` turns the whole text back:

====================================  ===============================
``&gt;`` ``&lt;`` ``&amp;``           ``>`` ``<`` ``&``
``<@U1>`` / ``<@U1|bob>``             ``@name`` (looked up) / ``@bob``
``<#C1|general>`` / ``<#C1>``         ``#general`` / ``#C1``
``<https://x|label>``                 ``label (https://x)``
``<http://README.md|README.md>``      ``README.md`` (Slack's own link)
``<https://x>`` / ``<mailto:a@b|a@b>`` ``https://x`` / ``a@b``
``<!here>`` ``<!subteam^S1|@team>``   ``@here`` ``@team``
``<!date^1392734382^{d}|Feb 18>``     ``Feb 18``
====================================  ===============================

Pure: names of people come in as a mapping (the intake looks them up with ``users.info``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_MARKUP = re.compile(r"<([^<>\n]*)>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)>")
_SCHEMES = ("http://", "https://", "mailto:", "tel:", "ftp://", "slack://")


def unescape(text: str) -> str:
    """Undo Slack's three escapes (``&amp;`` last, so ``&amp;gt;`` stays ``&gt;``)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mentioned_users(text: str) -> set[str]:
    """User ids mentioned without a name (``<@U123>``): the ones whose names must be looked up."""
    return set(_USER.findall(text))


def _same_text(url: str, label: str) -> bool:
    """Whether ``label`` is just ``url`` as typed (Slack linked a bare domain or address by itself)."""
    bare = url
    for scheme in _SCHEMES:
        if bare.lower().startswith(scheme):
            bare = bare[len(scheme) :]
            break
    return label in (url, bare, bare.rstrip("/"))


def _convert(inner: str, users: Mapping[str, str]) -> str:
    """One ``<…>`` token (still escaped inside) as plain text."""
    target, _, label = inner.partition("|")
    target, label = unescape(target), unescape(label)
    if target.startswith("@"):  # a person: <@U123> or <@U123|bob>
        name = label or users.get(target[1:]) or target[1:]
        return f"@{name.lstrip('@')}"
    if target.startswith("#"):  # a channel: <#C123|general> or <#C123>
        return f"#{label or target[1:]}"
    if target.startswith("!"):  # <!here>, <!subteam^S1|@team>, <!date^…|fallback>
        special = target[1:]
        if label:
            return label if label.startswith("@") or special.startswith("date^") else f"@{label}"
        kind, _, rest = special.partition("^")
        return f"@{rest or kind}"
    if not label or _same_text(target, label):
        return label or (target[len("mailto:") :] if target.startswith("mailto:") else target)
    return f"{label} ({target})"


def to_plain(text: str, users: Mapping[str, str] | None = None) -> str:
    """``text`` as Slack sent it → the text as the person wrote it (see the module docstring).

    ``users`` maps user ids to display names for ``<@U123>`` mentions; unknown ids stay ids.
    Anything between angle brackets that is not Slack markup cannot occur: Slack escapes a typed
    ``<`` as ``&lt;``, so every ``<`` in the raw text opens a token.
    """
    names = users or {}
    out: list[str] = []
    last = 0
    for match in _MARKUP.finditer(text):
        out.append(unescape(text[last : match.start()]))
        out.append(_convert(match.group(1), names))
        last = match.end()
    out.append(unescape(text[last:]))
    return "".join(out)
