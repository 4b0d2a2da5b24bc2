"""The event registry: handlers register per (event, action) with a decorator; the registry is data.

Routing happens twice, cheaply: in the webhook request (after the signature check) to decide whether a
delivery is worth a job at all — :meth:`EventSpec.screen` drops bots, comments not addressed to
Handoff and events we never act on — and in the job, to run the handler with the parsed model.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from github_app.events import Envelope

E = TypeVar("E", bound=Envelope)
Handler = Callable[[Any, Any], Awaitable[str]]
Screen = Callable[[Any, "Screening"], str | None]


@dataclass(frozen=True)
class Screening:
    """What the request-time screen knows: the App's slug and bot login."""

    slug: str
    bot_login: str
    app_id: int = 0

    def addressed(self, body: str | None) -> str | None:
        """The command text when ``body`` starts with ``/handoff`` or mentions ``@slug``, else ``None``."""
        return command_text(body, self.slug)


def command_text(body: str | None, slug: str) -> str | None:
    """Text after ``/handoff`` (at the start of the comment) or around an ``@slug`` mention."""
    text = (body or "").strip()
    match = re.match(r"^/handoff(?=\s|$)", text, re.IGNORECASE)
    if match:
        return text[match.end() :].strip()
    if slug:
        mention = re.compile(rf"(?<![\w-])@{re.escape(slug)}(?:\[bot\])?(?![\w-])", re.IGNORECASE)
        if mention.search(text):
            return re.sub(r"[ \t]{2,}", " ", mention.sub("", text, count=1)).strip(" ,:")
    return None


@dataclass(frozen=True)
class EventSpec(Generic[E]):
    """One routed (event, actions) pair: its model, its handler and its request-time screen."""

    event: str
    actions: frozenset[str]
    model: type[E]
    handler: Handler
    screen: Screen | None = None
    needs_repository: bool = True

    def parse(self, payload: Any) -> E | None:
        """The payload as ``model``, or ``None`` when it lacks what we need."""
        try:
            return self.model.model_validate(payload)
        except ValidationError:
            return None


@dataclass(frozen=True)
class Screened:
    """The request-time decision: ``ignored`` reason, or the slim payload to hand to a job."""

    name: str
    ignored: str | None
    slim: dict[str, Any] | None = None


class EventRegistry:
    """Event handlers by name and action, registered with :meth:`on`."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], EventSpec[Any]] = {}

    def on(
        self,
        event: str,
        *actions: str,
        model: type[E],
        screen: Screen | None = None,
        needs_repository: bool = True,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated ``async def handler(event_model, ingress) -> outcome``."""
        if not actions:
            raise ValueError(f"{event}: name at least one action")

        def register(handler: Handler) -> Handler:
            spec = EventSpec(event, frozenset(actions), model, handler, screen, needs_repository)
            for action in actions:
                if (event, action) in self._specs:
                    raise ValueError(f"{event}.{action} registered twice")
                self._specs[(event, action)] = spec
            return handler

        return register

    def route(self, event: str, action: str | None) -> EventSpec[Any] | None:
        """The spec for ``event.action``, if Handoff acts on it."""
        return self._specs.get((event, action or ""))

    @property
    def events(self) -> list[str]:
        """Every ``event.action`` routed (for the manifest's default events and the docs)."""
        return sorted(f"{e}.{a}" for e, a in self._specs)

    def screen(self, event: str, payload: Any, screening: Screening) -> Screened:
        """Decide from the payload alone whether a job should see this delivery."""
        raw_action = payload.get("action") if isinstance(payload, dict) else None
        action = raw_action if isinstance(raw_action, str) else None
        name = f"{event}.{action}" if action else event
        spec = self.route(event, action)
        if spec is None:
            return Screened(name, "ignored: not handled")
        model = spec.parse(payload)
        if model is None:
            return Screened(name, "ignored: payload lacks required fields")
        if model.installation is None:
            return Screened(name, "ignored: not sent to an App installation")
        if spec.needs_repository and (model.repository is None or "/" not in model.repository.full_name):
            return Screened(name, "ignored: no repository")
        reason = spec.screen(model, screening) if spec.screen is not None else None
        if reason is not None:
            return Screened(name, f"ignored: {reason}")
        # Only the fields we model travel to the job: a 25 MB payload becomes a few hundred bytes.
        return Screened(name, None, model.model_dump(mode="json", exclude_none=True))
