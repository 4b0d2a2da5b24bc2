"""GitHub failures as Handoff sees them, mapped once from githubkit/httpx in ``client.py``.

::

    HandoffError (core.errors)
    └── GitHubError
        ├── GitHubRateLimited     403/429 with Retry-After or x-ratelimit-reset; ``retry_after_s``
        ├── GitHubUnavailable     5xx, timeout, connection error; ``uncertain`` when a write may
        │                         have been applied anyway (look before re-creating)
        ├── GitHubRejected        any other 4xx (404 gone, 422 invalid, 403 forbidden); ``status``
        └── InstallationRevoked   the installation or repository was removed: no more tokens
"""

from __future__ import annotations

from core.errors import HandoffError


class GitHubError(HandoffError):
    """A call to GitHub failed."""

    status: int | None = None


class GitHubRateLimited(GitHubError):
    """GitHub asked us to wait ``retry_after_s`` seconds before the next call."""

    def __init__(self, message: str, retry_after_s: float, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.status = status


class GitHubUnavailable(GitHubError):
    """GitHub did not answer usefully (5xx, timeout, network); ``uncertain``: a write may have landed."""

    def __init__(self, message: str, *, uncertain: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.uncertain = uncertain
        self.status = status


class GitHubRejected(GitHubError):
    """GitHub refused the request for good (4xx); retrying the same request will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class InstallationRevoked(GitHubError):
    """The App was uninstalled or suspended, or the repository removed from the installation."""
