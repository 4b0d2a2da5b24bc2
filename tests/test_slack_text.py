"""Slack's escaping and markup back to what the person typed (``bot.text``), table-driven.

Each case is the ``text`` of a message as Slack delivers it (``app_mention`` / ``message`` events and
slash commands, in the shapes of Slack's reference payloads: escaped ``&<>``, ``<@U…>`` people,
``<#C…|name>`` channels, ``<url|label>`` links, Slack's own links for bare domains) and the plain
text that must become the instructions.
"""

from __future__ import annotations

import pytest

from bot.people import Names, display_name
from bot.text import mentioned_users, to_plain, unescape

USERS = {"U0G9QF9C6": "bob", "U024BE7LH": "Alice Smith"}

# (Slack's text, the plain text) — ids name what each row shows.
CASES = [
    ("echo hi &gt; HI.md", "echo hi > HI.md"),
    ("if a &lt; b &amp;&amp; c &gt; d then", "if a < b && c > d then"),
    ("literal &amp;gt; stays", "literal &gt; stays"),
    ("<@U0G9QF9C6> please fix it", "@bob please fix it"),
    ("ask <@U0G9QF9C6|bobby> first", "ask @bobby first"),
    ("cc <@U999UNKNOWN>", "cc @U999UNKNOWN"),
    ("see <#C024BE7LR|general> and <#C0UNNAMED>", "see #general and #C0UNNAMED"),
    ("read <https://example.com/docs|the docs> first", "read the docs (https://example.com/docs) first"),
    ("open <https://example.com/a?b=1&amp;c=2>", "open https://example.com/a?b=1&c=2"),
    ("fix <http://README.md|README.md> please", "fix README.md please"),
    ("mail <mailto:bob@example.com|bob@example.com>", "mail bob@example.com"),
    ("ping <!here> and <!channel> and <!everyone>", "ping @here and @channel and @everyone"),
    ("tell <!subteam^SAZ94GDB8|@backend> and <!subteam^S0NONAME>", "tell @backend and @S0NONAME"),
    ("due <!date^1392734382^Posted {date_num}|2014-02-18 6:39:42 AM PST>", "due 2014-02-18 6:39:42 AM PST"),
    ("```if x &lt; 3:\n    print(&quot;a&quot;)```", "```if x < 3:\n    print(&quot;a&quot;)```"),
    (
        "in acme/api: run `grep -r &quot;TODO&quot; src &gt; todo.txt` <@U024BE7LH>",
        "in acme/api: run `grep -r &quot;TODO&quot; src > todo.txt` @Alice Smith",
    ),
]
IDS = [
    "gt",
    "lt-amp",
    "double-escaped",
    "user",
    "user-with-label",
    "unknown-user",
    "channels",
    "labelled-link",
    "bare-link-with-amp",
    "slack-autolinked-file-name",
    "mailto",
    "broadcasts",
    "user-groups",
    "date",
    "code-block",
    "mixed",
]


@pytest.mark.parametrize(("sent", "typed"), CASES, ids=IDS)
def test_slack_text_becomes_what_was_typed(sent: str, typed: str) -> None:
    assert to_plain(sent, USERS) == typed


def test_a_recorded_app_mention_event() -> None:
    # The event of Slack's app_mention reference, with an escaped redirect in it.
    event = {
        "type": "app_mention",
        "user": "U061F7AUR",
        "text": "<@U0LAN0Z89> echo ok &gt; OK.md in acme/api",
        "ts": "1515449522.000016",
        "channel": "C0LAN2Q65",
        "event_ts": "1515449522000016",
    }
    assert mentioned_users(event["text"]) == {"U0LAN0Z89"}
    assert to_plain(event["text"], {"U0LAN0Z89": "handoff"}) == "@handoff echo ok > OK.md in acme/api"


def test_unescape_order_keeps_a_typed_entity() -> None:
    # Someone typed "&gt;" literally: Slack sent "&amp;gt;", which must come back as "&gt;".
    assert unescape("&amp;gt;") == "&gt;"


async def test_names_are_cached_and_failures_leave_the_id() -> None:
    calls: list[str] = []

    async def info(user: str) -> dict[str, object]:
        calls.append(user)
        if user == "U0BROKEN":
            raise ConnectionError("slack unreachable")
        return {"ok": True, "user": {"id": user, "name": "bob", "profile": {"display_name": ""}}}

    names = Names(info)
    assert await names({"U1", "U0BROKEN"}) == {"U1": "bob"}
    assert await names({"U1"}) == {"U1": "bob"}
    assert calls == ["U0BROKEN", "U1"]  # U1 once: cached
    assert display_name({"profile": {"display_name": " ", "real_name": "Bob B"}}) == "Bob B"
