"""Host-side git credentials and the draft pull request opened after a run pushed its branch.

:class:`GitHubCredentials` hands the worker an installation token scoped to the task's one
repository with ``contents: write`` only, as the git ``http.extraheader`` — the token never enters
the sandbox. :class:`GitHubPostPush` opens (or updates) the draft pull request from
``handoff/<task-id>``; a create whose answer was lost is looked up by its head branch before
trying again, and a fork's pull request gets an explanation instead of a push it cannot receive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from core.errors import WorkspaceError
from core.links import (
    AutomationLinks,
    GitHubLinks,
    PullRequestInfo,
    PullRequestLink,
    SlackLinks,
    TaskLinks,
)
from core.models import Run, Task
from core.ports import PushResult
from core.quoting import inert
from core.redact import redact
from core.refs import put_ref
from github_app.api import COMMENT_LIMIT, marker
from github_app.auth import GIT, GIT_READ, basic_auth_header
from github_app.errors import GitHubError, GitHubRateLimited, GitHubRejected, GitHubUnavailable
from github_app.render import fit
from github_app.services import PR_REF, GitHubServices

log = logging.getLogger(__name__)
# How long the worker may wait for GitHub (rate limits, 5xx) before giving up on the pull request.
MAX_WAIT_S = 120.0


class GitHubCredentials:
    """``core.ports.GitCredentials`` for GitHub tasks."""

    def __init__(self, services: GitHubServices) -> None:
        self.svc = services

    async def auth_header(self, task: Task) -> str | None:
        """The git auth header for the task's repository (``None`` for tasks not from GitHub)."""
        gh = GitHubLinks.of(task)
        if gh is None:
            return None
        # A review publishes nothing: its token can only read, so not even a bug could push.
        automation = AutomationLinks.of(task)
        permissions = GIT if automation is None or automation.publishes else GIT_READ
        try:
            token = await self.svc.client.token(gh.installation_id, task.repo, permissions)
        except GitHubError as exc:
            raise WorkspaceError(f"no GitHub token for {task.repo}: {exc}") from exc
        return basic_auth_header(token.value)


def pr_body(
    task: Task, run: Run, push: PushResult, summary: str | None, url: str, patterns: list[str]
) -> str:
    """The pull request description: what it closes, what changed, what was asked."""
    gh = GitHubLinks.of(task)
    number = gh.number if gh is not None else None
    pr = (gh.pr if gh is not None else None) or PullRequestInfo()
    is_pr = gh is not None and gh.is_pr
    automation = AutomationLinks.of(task)
    slack = SlackLinks.of(task)
    if number is None and slack is not None and slack.kind != "announce":
        lines = [requested_in_slack(task, slack)]
    elif number is None:
        rule = f" `{automation.rule}`" if automation is not None else ""
        lines = [f"Started by the automation{rule}."]
    else:
        lines = [f"Closes #{number}" if not is_pr else f"Follow-up to #{number}"]
    if pr.fork:
        lines.append(
            f"\n> #{number} comes from the fork `{pr.head_repo}`. Handoff cannot push to forks, so "
            f"these changes are on `{push.branch}` in this repository, on top of #{number}'s head."
        )
    if summary:
        lines.append(f"\n### Summary\n\n{inert(redact(summary, patterns))}")
    asked = (run.instructions or task.instructions).strip()
    quoted = "\n".join(f"> {line}" for line in asked[:8000].splitlines())
    lines.append(f"\n### What was run\n\n{quoted}")
    if push.files_changed:
        shown = ", ".join(f"`{f}`" for f in push.files_changed[:50])
        lines.append(f"\n**Files changed ({len(push.files_changed)})**: {shown}")
    lines.append(f"\n<sub>Handoff task [`{task.id}`]({url}) · run `{run.id}` (attempt {run.attempt})</sub>")
    return fit(f"{marker(f'github:pr:{task.id}')}\n" + "\n".join(lines), COMMENT_LIMIT)


def requested_in_slack(task: Task, slack: SlackLinks) -> str:
    """Who asked in Slack, and where: the first line of a pull request Slack asked for."""
    who = (task.requester or "").strip()
    person = f"@{who}" if who and not who.startswith("slack:") else "someone in Slack"
    where = f" ([the Slack thread]({slack.thread_url}))" if slack.thread_url else ""
    return f"Requested in Slack by {person}{where}; follow-ups there or on this pull request continue it."


class GitHubPostPush:
    """``core.ports.PostPush``: open or update the task's draft pull request."""

    def __init__(self, services: GitHubServices, secret_patterns: list[str] | None = None) -> None:
        self.svc = services
        self.patterns = secret_patterns or []

    async def after_push(
        self, task: Task, run: Run, push: PushResult, summary: str | None
    ) -> PullRequestLink | None:
        """The pull request opened or updated (``None`` for tasks not from GitHub)."""
        gh = GitHubLinks.of(task)
        if gh is None:
            return None
        inst, repo, api = gh.installation_id, str(task.repo), self.svc.api
        body = pr_body(task, run, push, summary, self.svc.task_url(task.id), self.patterns)
        pr = gh.pr or PullRequestInfo()
        base = (pr.base_ref if pr.fork else pr.head_ref) or task.base_ref or gh.default_branch or "main"
        title = (task.instructions.strip().splitlines() or ["changes"])[0].lstrip("# ")[:120]
        request = {
            "title": f"Handoff: {title}",
            "head": push.branch,
            "base": base,
            "body": body,
            "draft": True,
        }

        async def create() -> dict[str, Any]:
            number = TaskLinks.of(task).pr_number
            existing = await api.find_pull(inst, repo, push.branch)
            if existing is None and number:
                existing = {"number": number, "html_url": task.pr_url}
            if existing is not None:
                await api.update_pull(inst, repo, int(existing["number"]), {"body": body})
                return existing
            try:
                return await api.create_pull(inst, repo, request)
            except GitHubRejected as exc:
                if exc.status == 422 and "draft" in str(exc).lower():
                    return await api.create_pull(inst, repo, {**request, "draft": False})
                if exc.status == 422:  # "A pull request already exists": someone (or we) opened it
                    found = await api.find_pull(inst, repo, push.branch)
                    if found is not None:
                        return found
                raise

        pull = await self._patiently(create)
        async with self.svc.sessions.begin() as session:
            await put_ref(session, PR_REF.format(repo=repo, number=pull["number"]), {"task_id": task.id})
        return PullRequestLink(url=pull.get("html_url"), number=int(pull["number"]))

    async def _patiently(self, attempt: Any) -> dict[str, Any]:
        """Retry ``attempt`` through rate limits and 5xx for up to :data:`MAX_WAIT_S` (each retry looks first)."""
        waited = 0.0
        delay = 1.0
        while True:
            try:
                result: dict[str, Any] = await attempt()
                return result
            except (GitHubRateLimited, GitHubUnavailable) as exc:
                pause = exc.retry_after_s if isinstance(exc, GitHubRateLimited) else delay
                if waited + pause > MAX_WAIT_S:
                    raise
                log.warning("pull request: %s; trying again in %.0f s", exc, pause)
                await asyncio.sleep(pause)
                waited += pause
                delay = min(delay * 2, 30.0)
