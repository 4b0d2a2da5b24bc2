"""The GitHub operations Handoff performs, each with its permission set and write flag.

A thin layer over :class:`~github_app.client.GitHubClient`: callers name an installation and a
repository (``owner/name``) and get plain dicts back (``response.json()``), never githubkit models,
so a field GitHub adds or drops cannot break parsing. Hidden markers (``<!-- handoff:KEY -->``) tag
every comment Handoff writes, so one whose create answer was lost can be found instead of re-posted.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, cast

from githubkit import GitHub

from github_app.auth import PULLS, READ, REPORT
from github_app.client import GitHubClient
from github_app.errors import GitHubRejected

COMMENT_LIMIT = 65_536
CHECK_TEXT_LIMIT = 65_535
MAX_ANNOTATIONS = 50
MARKER = "<!-- handoff:{key} -->"


def marker(key: str) -> str:
    """The hidden marker that identifies the comment written for ``key``."""
    return MARKER.format(key=key)


def _split(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    return owner, name


class GitHubAPI:
    """Domain calls used by ingress, the notifier and the post-push step."""

    def __init__(self, client: GitHubClient) -> None:
        self.client = client

    # -- reads (ingress) -------------------------------------------------------------------------

    async def permission(self, inst: int, repo: str, user: str) -> str:
        """The user's role on ``repo``: admin, maintain, write, triage, read or none."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.repos.async_get_collaborator_permission_level(owner, name, user)

        try:
            data = (await self.client.call(inst, repo, get, permissions=READ)).json()
        except GitHubRejected as exc:
            if exc.status == 404:  # not a collaborator / unknown user
                return "none"
            raise
        role = str(data.get("role_name") or data.get("permission") or "none")
        return role

    async def file(self, inst: int, repo: str, path: str, ref: str) -> str | None:
        """The text of ``path`` at ``ref``, or ``None`` when it does not exist."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.repos.async_get_content(owner, name, path, ref=ref)

        try:
            data = (await self.client.call(inst, repo, get, permissions=READ)).json()
        except GitHubRejected as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("type") != "file":
            return None
        return base64.b64decode(data.get("content") or "").decode("utf-8", "replace")

    async def branch_sha(self, inst: int, repo: str, branch: str) -> str | None:
        """The commit at the tip of ``branch``."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.git.async_get_ref(owner, name, f"heads/{branch}")

        try:
            data = (await self.client.call(inst, repo, get, permissions=READ)).json()
        except GitHubRejected as exc:
            if exc.status == 404:
                return None
            raise
        return str(data.get("object", {}).get("sha") or "") or None

    async def pull(self, inst: int, repo: str, number: int) -> dict[str, Any]:
        """One pull request."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.pulls.async_get(owner, name, number)

        return cast(dict[str, Any], (await self.client.call(inst, repo, get, permissions=READ)).json())

    async def comments(
        self, inst: int, repo: str, number: int, *, since: datetime | None = None, pages: int = 10
    ) -> list[dict[str, Any]]:
        """Conversation comments of an issue or pull request, oldest first."""
        owner, name = _split(repo)
        found: list[dict[str, Any]] = []
        for page in range(1, pages + 1):

            async def get(gh: GitHub[Any], page: int = page) -> Any:
                if since is not None:
                    return await gh.rest.issues.async_list_comments(
                        owner, name, number, per_page=100, page=page, since=since
                    )
                return await gh.rest.issues.async_list_comments(owner, name, number, per_page=100, page=page)

            batch = (await self.client.call(inst, repo, get, permissions=READ)).json()
            found.extend(batch)
            if len(batch) < 100:
                break
        return found

    # -- writes (outbox notifier, post-push) ------------------------------------------------------

    async def find_comment(
        self, inst: int, repo: str, number: int, key: str, since: datetime | None
    ) -> int | None:
        """The id of the comment carrying ``key`` 's marker, if one exists."""
        tag = marker(key)
        for comment in reversed(await self.comments(inst, repo, number, since=since)):
            if tag in (comment.get("body") or ""):
                return int(comment["id"])
        return None

    async def create_comment(self, inst: int, repo: str, number: int, body: str) -> dict[str, Any]:
        """Post a conversation comment."""
        owner, name = _split(repo)

        async def post(gh: GitHub[Any]) -> Any:
            return await gh.rest.issues.async_create_comment(owner, name, number, body=body)

        result = await self.client.call(inst, repo, post, permissions=REPORT, write=True)
        return cast(dict[str, Any], result.json())

    async def update_comment(self, inst: int, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        """Edit a comment in place."""
        owner, name = _split(repo)

        async def patch(gh: GitHub[Any]) -> Any:
            return await gh.rest.issues.async_update_comment(owner, name, comment_id, body=body)

        result = await self.client.call(inst, repo, patch, permissions=REPORT, write=True)
        return cast(dict[str, Any], result.json())

    async def react(self, inst: int, repo: str, comment_id: int, kind: str, content: str = "eyes") -> None:
        """Add a reaction to an issue comment or a review comment (GitHub makes a repeat a no-op)."""
        owner, name = _split(repo)

        async def post(gh: GitHub[Any]) -> Any:
            if kind == "review":
                return await gh.rest.reactions.async_create_for_pull_request_review_comment(
                    owner, name, comment_id, content=cast(Any, content)
                )
            return await gh.rest.reactions.async_create_for_issue_comment(
                owner, name, comment_id, content=cast(Any, content)
            )

        await self.client.call(inst, repo, post, permissions=REPORT, write=True)

    async def react_issue(self, inst: int, repo: str, number: int, content: str = "eyes") -> None:
        """Add a reaction to an issue or pull request itself (label and assignment triggers)."""
        owner, name = _split(repo)

        async def post(gh: GitHub[Any]) -> Any:
            return await gh.rest.reactions.async_create_for_issue(
                owner, name, number, content=cast(Any, content)
            )

        await self.client.call(inst, repo, post, permissions=REPORT, write=True)

    async def create_check(self, inst: int, repo: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a check run."""
        owner, name = _split(repo)

        async def post(gh: GitHub[Any]) -> Any:
            return await gh.rest.checks.async_create(owner, name, data=cast(Any, body))

        result = await self.client.call(inst, repo, post, permissions=REPORT, write=True)
        return cast(dict[str, Any], result.json())

    async def update_check(self, inst: int, repo: str, check_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """Update a check run (annotations in ``output`` are appended by GitHub)."""
        owner, name = _split(repo)

        async def patch(gh: GitHub[Any]) -> Any:
            return await gh.rest.checks.async_update(owner, name, check_id, data=cast(Any, body))

        result = await self.client.call(inst, repo, patch, permissions=REPORT, write=True)
        return cast(dict[str, Any], result.json())

    async def find_check(
        self, inst: int, repo: str, sha: str, check_name: str, external_id: str
    ) -> int | None:
        """The id of this App's check run for ``external_id`` on ``sha``, if it exists."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.checks.async_list_for_ref(
                owner, name, sha, check_name=check_name, filter_="all", per_page=100
            )

        data = (await self.client.call(inst, repo, get, permissions=REPORT)).json()
        for run in data.get("check_runs", []):
            if run.get("external_id") == external_id:
                return int(run["id"])
        return None

    async def find_pull(self, inst: int, repo: str, branch: str) -> dict[str, Any] | None:
        """The open pull request from ``branch`` of ``repo``, if any."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.pulls.async_list(owner, name, head=f"{owner}:{branch}", state="open")

        pulls = (await self.client.call(inst, repo, get, permissions=PULLS)).json()
        return cast(dict[str, Any], pulls[0]) if pulls else None

    async def create_pull(self, inst: int, repo: str, body: dict[str, Any]) -> dict[str, Any]:
        """Open a pull request."""
        owner, name = _split(repo)

        async def post(gh: GitHub[Any]) -> Any:
            return await gh.rest.pulls.async_create(owner, name, data=cast(Any, body))

        result = await self.client.call(inst, repo, post, permissions=PULLS, write=True)
        return cast(dict[str, Any], result.json())

    async def update_pull(self, inst: int, repo: str, number: int, body: dict[str, Any]) -> dict[str, Any]:
        """Edit a pull request's title or body."""
        owner, name = _split(repo)

        async def patch(gh: GitHub[Any]) -> Any:
            return await gh.rest.pulls.async_update(owner, name, number, data=cast(Any, body))

        result = await self.client.call(inst, repo, patch, permissions=PULLS, write=True)
        return cast(dict[str, Any], result.json())
