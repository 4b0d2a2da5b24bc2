"""Agent-written text quoted in Handoff's own commits, GitHub comments, pull requests and checks.

What an agent writes (its summary, its findings) is content Handoff shows, not something Handoff
says. In GitHub Markdown some content acts: ``@user`` and ``@org/team`` notify people,
``#123``/``owner/repo#123`` add a "mentioned this" entry to other issues, and ``closes #123`` in a
pull request body or a commit message closes that issue when it reaches the default branch.
:func:`inert` keeps the text as
it reads but breaks those constructs with an invisible word joiner (U+2060), so an injected agent
can neither ping a team nor close or spam issues in Handoff's name.
"""

from __future__ import annotations

import re

_JOIN = "\u2060"
# @user, @org/team (GitHub logins: letters, digits, hyphens); not e-mail addresses (x@y).
_MENTION = re.compile(r"(?<![\w`])@(?=[A-Za-z0-9])")
# #123, owner/repo#123, GH-123
_REFERENCE = re.compile(r"(?<!&)(#|(?<!\w)GH-)(?=\d)", re.IGNORECASE)


def inert(text: str) -> str:
    """``text`` with its mentions and issue references made plain text (see the module docstring)."""
    text = _MENTION.sub("@" + _JOIN, text)
    return _REFERENCE.sub(lambda m: m.group(1) + _JOIN, text)
