"""How an agent's run ended, before Handoff decides what that means for the task.

Both agent paths — a command profile run to its end in the sandbox, and the built-in agent's loop —
return an :class:`AgentEnd`; :class:`jobs.execute.Execution` alone turns it into an outcome (a task
state and reason) and publishes the work. The agent paths never import the execution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from core.links import LinkChanges
from core.scheduling import WAIT_QUESTION

Status = Literal["finished", "asked", "budget", "cancelled", "timeout", "failed"]


@dataclass
class AgentEnd:
    """The end of one agent run, in the agent's terms."""

    status: Status
    # Why it failed, or which budget it used up.
    reason: str | None = None
    # A failure worth another attempt (the engine or the model's API was unavailable).
    retryable: bool = False
    exit_code: int | None = None
    # The agent's question (``asked``).
    question: str | None = None
    # The container was killed for memory.
    oom: bool = False
    # Model calls made and the model that answered, when the agent path knows them.
    steps: int | None = None
    model: str | None = None
    # What the run changes in the task's links (the built-in agent's saved conversation).
    changes: LinkChanges = field(default_factory=LinkChanges)
    # Review mode: what the built-in agent reported (untrusted; jobs.review checks it).
    findings: Any = None

    @property
    def waiting_reason(self) -> str:
        """The task's waiting reason while the question waits for its answer."""
        first = (self.question or "").splitlines()[:1]
        return f"{WAIT_QUESTION} {first[0][:200]}" if first else WAIT_QUESTION
