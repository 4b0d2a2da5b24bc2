"""The command registry shared by GitHub and Slack, and the normalised :class:`Mention`.

Every ingress (an issue comment, a review comment, a Slack mention, a slash command, a DM) turns
its event into one :class:`Mention` before any command logic runs. :func:`parse` then has three
outcomes, as in Atlantis: a command to run, a reply to give now, or nothing. Commands register with
:meth:`Registry.command` and must carry their help, so ``help`` is generated — the same text on GitHub
and in Slack.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from core.links import ReviewComment, TaskLinks


class Who(StrEnum):
    """Who may use a command."""

    anyone = "anyone"
    writers = "people with write access"
    requester_or_writers = "the requester or people with write access"
    admins = "Handoff admins"


@dataclass(frozen=True)
class Mention:
    """One request addressed to Handoff, whatever platform it came from."""

    source: str
    author: str
    text: str
    delivery_id: str
    target_key: str | None = None
    repo: str | None = None
    # The conversation it was said in, where the platform has one (a Slack channel id).
    channel: str | None = None
    can_write: bool = False
    is_admin: bool = False
    links: TaskLinks = field(default_factory=TaskLinks)
    # Facts about where it was said, kept with a follow-up it becomes (who, which channel...).
    context: dict[str, str] = field(default_factory=dict)
    # A pull-request review comment: where in the diff it was made.
    review: ReviewComment | None = None
    # Said on a pull request Handoff opened: it continues that pull request's task.
    on_handoff_pr: bool = False
    # Budgets the ingress allows for a task started from it (e.g. a repository's bounded config).
    budget: dict[str, Any] = field(default_factory=dict)
    # GitHub issue title/body and the like, written by someone who may not be trusted.
    untrusted: bool = False
    # The whole text is instructions, never a command (a labelled or assigned issue).
    verbatim: bool = False
    # What a new task from this mention is recorded as (a ``core.models.TaskSource`` value).
    task_source: str = "api"


@dataclass(frozen=True)
class Command:
    """A parsed command: its name, its arguments and the mention it came from."""

    name: str
    args: list[str]
    mention: Mention
    options: dict[str, str] = field(default_factory=dict)

    @property
    def rest(self) -> str:
        """The arguments joined back into text (free-text instructions)."""
        return " ".join(self.args)


@dataclass(frozen=True)
class Reply:
    """What to tell the person, where they asked; ``task_id`` when a task was touched."""

    text: str
    task_id: str | None = None
    ok: bool = True
    private: bool = False
    # The command that answered (``None``: the text was not a command, e.g. empty).
    command: str | None = None


@dataclass(frozen=True)
class Ignore:
    """Not addressed to Handoff (or nothing to do)."""

    reason: str


Handler = Callable[[Command, Any], Awaitable[Reply]]


@dataclass(frozen=True)
class CommandSpec:
    """A registered command and its help."""

    name: str
    usage: str
    description: str
    who_can_use: Who
    examples: tuple[str, ...]
    handler: Handler
    # Where the command exists (a ``Mention.source``: "github", "slack"); empty: everywhere.
    platforms: frozenset[str] = frozenset()
    # It acts on one task (the one here, or one named by id): Slack accepts it in a task's thread
    # and as ``/handoff <name> <task-id>``.
    on_task: bool = False
    # Its handler writes its own audit entries (the task service's, or the platform's).
    audits_itself: bool = False

    def available_on(self, platform: str | None) -> bool:
        """Whether the command exists on ``platform`` (``None``: anywhere)."""
        return not self.platforms or platform is None or platform in self.platforms


class Registry:
    """Commands by name; built once at start-up, then read-only data."""

    WORK = "work"

    def __init__(self) -> None:
        self._commands: dict[str, CommandSpec] = {}

    def command(
        self,
        name: str,
        *,
        usage: str,
        description: str,
        who_can_use: Who,
        examples: tuple[str, ...] = (),
        platforms: frozenset[str] = frozenset(),
        on_task: bool = False,
        audits_itself: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated handler; help fields are required."""
        if not usage or not description:
            raise ValueError(f"command {name!r} needs usage and description")

        def register(handler: Handler) -> Handler:
            if name in self._commands:
                raise ValueError(f"command {name!r} registered twice")
            self._commands[name] = CommandSpec(
                name,
                usage,
                description,
                who_can_use,
                examples,
                handler,
                platforms=platforms,
                on_task=on_task,
                audits_itself=audits_itself,
            )
            return handler

        return register

    def __contains__(self, name: str) -> bool:
        return name in self._commands

    def get(self, name: str) -> CommandSpec:
        """The command called ``name``."""
        return self._commands[name]

    def find(self, name: str, platform: str | None) -> CommandSpec | None:
        """The command called ``name`` if it exists on ``platform``."""
        spec = self._commands.get(name)
        return spec if spec is not None and spec.available_on(platform) else None

    @property
    def specs(self) -> list[CommandSpec]:
        """Every command, the free-text one first, then by name."""
        return sorted(self._commands.values(), key=lambda s: (s.name != self.WORK, s.name))

    def on_task(self, platform: str | None = None) -> tuple[str, ...]:
        """Names of the commands that act on one task (on ``platform``)."""
        return tuple(s.name for s in self.specs if s.on_task and s.available_on(platform))

    def parse(self, mention: Mention) -> Command | Reply | Ignore:
        """Split the mention's text into a command (free text is the ``work`` command).

        Only commands that exist on the mention's platform are recognised: elsewhere the same
        word starts free text, as it always did.
        """
        if mention.verbatim:
            return Command(self.WORK, [mention.text], mention)
        text = mention.text.strip()
        if not text:
            return Reply(self.help_for(mention.source))
        try:
            words = shlex.split(text, posix=True)
        except ValueError:
            words = text.split()
        options: dict[str, str] = {}
        while len(words) >= 2 and words[0] in ("--model", "--agent", "--base"):
            options[words[0][2:]] = words[1]
            words = words[2:]
        if not words:
            return Reply(
                "Tell me what to do after the options, e.g. `/handoff --model X fix the flaky test`.",
                ok=False,
            )
        head = words[0].lower()
        spec = self._commands.get(head)
        if spec is not None and head != self.WORK and not options and spec.available_on(mention.source):
            return Command(head, words[1:], mention)
        # Free text: keep the original spacing and line breaks of the instructions.
        body = _strip_options(text) if options else text
        return Command(self.WORK, [body], mention, options)

    def help_text(self, style: str = "markdown", platform: str | None = None) -> str:
        """The help for every command (of ``platform``), as GitHub Markdown or Slack mrkdwn."""
        bold = "**{}**" if style == "markdown" else "*{}*"
        lines = [bold.format("Handoff commands"), ""]
        for spec in self.specs:
            if not spec.available_on(platform):
                continue
            lines.append(f"• `{spec.usage}` — {spec.description} _(who: {spec.who_can_use.value})_")
            lines.extend(f"    e.g. `{example}`" for example in spec.examples)
        return "\n".join(lines)

    def help_for(self, source: str) -> str:
        """The help for the platform a mention came from, in its markup."""
        return self.help_text("markdown" if source == "github" else "slack", platform=source)


_OPTION = re.compile(r"^\s*(?:--(?:model|agent|base)\s+\S+\s+)+")


def _strip_options(text: str) -> str:
    return _OPTION.sub("", text, count=1).strip()


def allowed(spec: CommandSpec, mention: Mention, requester: str | None = None) -> bool:
    """Whether the author of ``mention`` may use ``spec`` (on a task requested by ``requester``)."""
    if spec.who_can_use is Who.anyone:
        return True
    if mention.can_write or mention.is_admin:
        return True
    return (
        spec.who_can_use is Who.requester_or_writers and requester is not None and requester == mention.author
    )
