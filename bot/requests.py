"""A verified Slack request, read and screened before anything is recorded (pure).

Every signed request gets a 2xx — Slack counts anything else as a failed delivery and retries it —
so reading never raises: the body becomes either :class:`Accepted` (recorded, then handled by the
``slack_ingest`` job) or :class:`Answered` (answered at once, nothing recorded) with the reason for
the log line. What is answered at once:

* ``url_verification`` (the challenge) and ``ssl_check``;
* ``/handoff help`` — static text from the command registry;
* what Handoff does not act on: events of other types (``app_home_opened``, ``reaction_added``),
  edits, bot messages, channel messages outside a thread, link buttons;
* malformed bodies (not UTF-8, ``payload=`` that is not JSON, a JSON array, fields missing or of the
  wrong type, text the database could not hold): a slash command gets a polite ephemeral answer,
  everything else a log line.

What is recorded gets its acknowledgement from here too: a task-starting slash command says at
once that its status follows in the channel.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from core.inputs import text_problem

# Slack's ids and trigger ids: printable ASCII, short. Anything else is not from Slack's servers.
_ID = re.compile(r"^[\x21-\x7e]{1,200}$")
_TEAM = re.compile(r"^[A-Z0-9]{1,32}$")
# Buttons that act (the others open links: Slack handles the click itself).
ACTION_IDS = frozenset({"handoff_cancel", "handoff_retry"})
# Events Handoff acts on; every other type is acknowledged and dropped.
EVENTS = frozenset({"app_mention", "message"})

NOT_READABLE = (
    "Sorry, Handoff could not read that request ({why}). Nothing was started; please try again, "
    "and tell your Handoff admin if it keeps happening."
)
STARTING = ":eyes: Got it — the task's status follows in this channel in a moment."


@dataclass(frozen=True)
class Accepted:
    """A request to record and hand to the job."""

    delivery_id: str
    team_id: str | None
    # What it is: "slash_command", "app_mention", "message.im", "thread_reply", "block_actions".
    event: str
    payload: dict[str, Any]
    # The acknowledgement's body (a slash command's immediate answer), or ``None`` for an empty 200.
    ack: dict[str, Any] | None = None


@dataclass(frozen=True)
class Answered:
    """A request answered at once; nothing is recorded."""

    body: dict[str, Any] | None
    why: str
    # A malformed body (logged as a warning); otherwise an ordinary request Handoff ignores.
    malformed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


Read = Accepted | Answered


def ephemeral(text: str) -> dict[str, Any]:
    """A slash command's answer only its author sees."""
    return {"response_type": "ephemeral", "text": text}


def _bad(why: str, *, person: bool) -> Answered:
    return Answered(ephemeral(NOT_READABLE.format(why=why)) if person else None, why, malformed=True)


def _team(value: Any) -> str | None:
    return value if isinstance(value, str) and _TEAM.match(value) else None


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) and _ID.match(value) else None


class RequestReader:
    """Reads verified bodies for one bot: its slash command and how it answers ``help``."""

    def __init__(self, command: str, help_text: Callable[[], str], commands: Callable[[], set[str]]) -> None:
        self.slash_command = command
        self.help_text = help_text
        # Words that start a registered command (``status``, ``bind``, ...): no "status follows" ack.
        self.commands = commands

    def read(self, body: bytes, content_type: str) -> Read:
        """What to do with a verified body (never raises)."""
        media = content_type.split(";")[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            return self._form(body)
        if media == "application/json" or media.endswith("+json"):
            return self._json(body)
        return _bad(f"unexpected content type {media or 'none'}", person=False)

    # -- form bodies: slash commands and interactivity -------------------------------------------

    def _form(self, body: bytes) -> Read:
        try:
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict"))
        except (UnicodeDecodeError, ValueError):
            return _bad("the request was not valid UTF-8", person=True)
        if "payload" in fields:
            try:
                payload = json.loads(fields["payload"])
            except (ValueError, RecursionError):
                return _bad("payload= was not JSON", person=False)
            return self.interaction(payload)
        if "command" in fields:
            return self.command(fields)
        if fields.get("ssl_check") == "1":
            return Answered(None, "ssl_check")
        return _bad("a form without a command or payload", person=True)

    def command(self, raw: Any) -> Read:
        """A slash command's fields (the form of an HTTP request, or a Socket Mode payload)."""
        if not isinstance(raw, dict):
            return _bad("a slash command that is not a set of fields", person=False)
        fields = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
        if fields.get("command") != self.slash_command:
            return Answered(
                ephemeral(
                    f"This is Handoff's endpoint for `{self.slash_command}`, not `{fields.get('command')}`."
                ),
                "another command",
                malformed=True,
            )
        problem = next((text_problem(v) for v in fields.values() if text_problem(v)), None)
        if problem is not None:
            return _bad(f"the text {problem}", person=True)
        trigger = _id(fields.get("trigger_id"))
        user = _id(fields.get("user_id"))
        if trigger is None or user is None or _id(fields.get("channel_id")) is None:
            return _bad("trigger_id, user_id or channel_id is missing", person=True)
        words = fields.get("text", "").split()
        head = words[0].lower() if words else ""
        if head in ("", "help"):
            return Answered(ephemeral(self.help_text()), "help")
        ack = None if head in self.commands() else ephemeral(STARTING)
        return Accepted(f"cmd:{trigger}", _team(fields.get("team_id")), "slash_command", dict(fields), ack)

    def interaction(self, payload: Any) -> Read:
        """An interaction payload (``payload=`` of an HTTP request, or a Socket Mode payload)."""
        if not isinstance(payload, dict):
            return _bad("payload= was not a JSON object", person=False)
        kind = payload.get("type")
        raw_team = payload.get("team")
        team: dict[str, Any] = raw_team if isinstance(raw_team, dict) else {}
        if kind != "block_actions":
            return Answered(None, f"interaction {kind!r} not handled")
        actions = payload.get("actions")
        action = (
            actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else None
        )
        if action is None:
            return _bad("block_actions without actions", person=False)
        if action.get("action_id") not in ACTION_IDS:
            return Answered(None, "a link button")  # Slack opened the link; nothing to do
        trigger = _id(payload.get("trigger_id")) or _id(action.get("action_ts"))
        if trigger is None or not isinstance(payload.get("user"), dict):
            return _bad("block_actions without trigger_id or user", person=False)
        return Accepted(f"act:{trigger}", _team(team.get("id")), "block_actions", payload)

    # -- JSON bodies: the Events API -------------------------------------------------------------

    def _json(self, body: bytes) -> Read:
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):
            return _bad("the body was not JSON", person=False)
        return self.envelope(envelope)

    def envelope(self, envelope: Any) -> Read:
        """An Events API envelope (an HTTP body, or a Socket Mode ``events_api`` payload)."""
        if not isinstance(envelope, dict):
            return _bad("the body was not a JSON object", person=False)
        kind = envelope.get("type")
        if kind == "url_verification":
            challenge = envelope.get("challenge")
            if not isinstance(challenge, str):
                return _bad("url_verification without a challenge", person=False)
            return Answered({"challenge": challenge}, "url_verification")
        if kind != "event_callback":
            return Answered(None, f"envelope type {kind!r} not handled")
        event = envelope.get("event")
        event_id = _id(envelope.get("event_id"))
        if not isinstance(event, dict) or event_id is None:
            return _bad("event_callback without event or event_id", person=False)
        etype = event.get("type")
        if etype not in EVENTS:
            return Answered(None, f"event {etype!r} not handled")
        if not all(isinstance(event.get(k, ""), str) for k in ("text", "user", "channel", "ts", "thread_ts")):
            return _bad(f"{etype} with fields of the wrong type", person=False)
        if text_problem(str(event.get("text", ""))):
            return _bad(f"{etype} text the database cannot hold", person=False)
        team = _team(envelope.get("team_id"))
        delivery = f"ev:{event_id}"
        if etype == "app_mention":
            return Accepted(delivery, team, "app_mention", envelope)
        screened = self._message(event, bot_user_of(envelope))
        if screened is None:
            return Answered(None, "a message not for Handoff")
        return Accepted(delivery, team, screened, envelope)

    @staticmethod
    def _message(event: dict[str, Any], bot_user: str | None) -> str | None:
        """``message.im``, ``thread_reply`` or ``None`` (not for us: edits, bots, channel chatter)."""
        if event.get("subtype") or event.get("bot_id") or not event.get("user"):
            return None  # edits, joins, bot posts (our own included)
        if bot_user and event.get("user") == bot_user:
            return None
        if event.get("channel_type") == "im":
            return "message.im"
        thread, ts = event.get("thread_ts"), event.get("ts")
        if not thread or thread == ts:
            return None  # a channel message outside a thread
        if bot_user and f"<@{bot_user}" in str(event.get("text", "")):
            return None  # the app_mention event of the same message handles it
        return "thread_reply"


def bot_user_of(envelope: dict[str, Any]) -> str | None:
    """The bot's own user id in this workspace (``authorizations``), when Slack says it."""
    auths = envelope.get("authorizations")
    if isinstance(auths, list):
        for auth in auths:
            if isinstance(auth, dict) and auth.get("is_bot") and isinstance(auth.get("user_id"), str):
                return str(auth["user_id"])
    return None


def log_answer(log: logging.Logger, answered: Answered, where: str) -> None:
    """The one log line of a request answered without being recorded."""
    if answered.malformed:
        log.warning("slack %s: malformed request answered and dropped: %s", where, answered.why)
    else:
        log.debug("slack %s: %s", where, answered.why)
