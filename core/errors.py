"""The one exception tree of Handoff.

::

    HandoffError
    ├── ConfigError            settings or handoff.yml are invalid (start-up)
    ├── NotFound               a task, run or profile does not exist
    ├── InvalidTransition      the state machine refused a transition
    ├── PermissionDenied       the requester may not do this
    ├── InvalidInput           a value from outside cannot be accepted (names the field)
    ├── DependencyUnavailable  a backing service does not answer
    │   ├── QueueUnavailable   Redis / arq
    │   ├── DatabaseUnavailable
    │   ├── SandboxUnavailable Docker
    │   └── HostUnavailable    a code host (GitHub) asked about a repository
    ├── WorkspaceError         clone, commit or push failed
    └── SandboxError           the container could not be run as asked

Edges (routes, listeners, jobs) catch these and tell the user what happened where they asked.
"""

from __future__ import annotations


class HandoffError(Exception):
    """Base class for every error Handoff raises on purpose."""


class ConfigError(HandoffError):
    """Settings or ``handoff.yml`` are missing or invalid."""


class NotFound(HandoffError):
    """A task, run, profile or other named thing does not exist."""


class InvalidTransition(HandoffError):
    """A task state transition that the state machine does not allow."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"cannot move a task from {current!r} to {target!r}")
        self.current = current
        self.target = target


class PermissionDenied(HandoffError):
    """The requester may not perform this action."""


class InvalidInput(HandoffError):
    """A value from outside cannot be accepted (e.g. text with NUL); ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class DependencyUnavailable(HandoffError):
    """A backing service (database, Redis, Docker) does not answer."""

    service = "dependency"


class QueueUnavailable(DependencyUnavailable):
    """Redis (the arq queue) does not answer."""

    service = "redis"


class DatabaseUnavailable(DependencyUnavailable):
    """The database does not answer."""

    service = "database"


class SandboxUnavailable(DependencyUnavailable):
    """The Docker engine does not answer."""

    service = "docker"


class HostUnavailable(DependencyUnavailable):
    """A code host (GitHub) did not answer a question about a repository (rate-limited, down)."""

    service = "GitHub"


class WorkspaceError(HandoffError):
    """Cloning, committing or pushing the repository failed."""


class SandboxError(HandoffError):
    """The sandbox container could not be created or run as asked."""
