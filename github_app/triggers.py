"""What each GitHub event means for Handoff: one decorated handler per (event, actions).

Handlers only translate: the payload becomes a :class:`~github_app.ingress.Target` and a
:class:`~github_app.ingress.Trigger` (or a cancellation), and :class:`~github_app.ingress.Ingress`
does the shared work. Screens run in the webhook request, so bots, our own comments and comments
not addressed to Handoff never cost a job.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlmodel import col

from core.errors import NotFound
from core.links import GitHubLinks, PullRequestInfo, ReviewComment
from core.models import Task, TaskSource
from core.states import TERMINAL
from github_app.api import MARKER
from github_app.events import (
    CheckRunEvent,
    Envelope,
    InstallationEvent,
    InstallationRepositoriesEvent,
    IssueCommentEvent,
    IssuesEvent,
    PullRequest,
    PullRequestEvent,
    ReviewCommentEvent,
    ReviewEvent,
)
from github_app.ingress import Ingress, Target, Trigger
from github_app.routing import EventRegistry, Screening, command_text

MAX_CONTEXT_CHARS = 20_000
_OURS = MARKER.split("{")[0]


def _bot(ev: Envelope, s: Screening) -> str | None:
    return "sent by a bot" if ev.sender.is_bot or ev.sender.login == s.bot_login else None


def _comment_screen(ev: IssueCommentEvent, s: Screening) -> str | None:
    if _bot(ev, s) or ev.comment.user.is_bot or _OURS in (ev.comment.body or ""):
        return "sent by a bot"
    return None if s.addressed(ev.comment.body) is not None else "not addressed to Handoff"


def _review_comment_screen(ev: ReviewCommentEvent, s: Screening) -> str | None:
    if _bot(ev, s) or ev.comment.user.is_bot:
        return "sent by a bot"
    repo = ev.repository.full_name if ev.repository else ""
    # Only a task branch in the repository itself makes a comment a follow-up without a command.
    on_ours = ev.pull_request.head.ref.startswith("handoff/") and not pr_info(ev.pull_request, repo).fork
    return None if on_ours or s.addressed(ev.comment.body) is not None else "not addressed to Handoff"


def _review_screen(ev: ReviewEvent, s: Screening) -> str | None:
    if _bot(ev, s):
        return "sent by a bot"
    return None if s.addressed(ev.review.body) is not None else "not addressed to Handoff"


def _own_check(ev: CheckRunEvent, s: Screening) -> str | None:
    if s.app_id and ev.check_run.app is not None and ev.check_run.app.id != s.app_id:
        return "another App's check run"
    return None if ev.check_run.external_id else "no task id on the check run"


def _assigned_to_us(ev: IssuesEvent, s: Screening) -> str | None:
    if _bot(ev, s):
        return "sent by a bot"
    login = ev.assignee.login if ev.assignee else ""
    return None if login and login in (s.bot_login, s.slug) else "assigned to someone else"


def _target(ev: Envelope, number: int, is_pr: bool, url: str, pr: PullRequestInfo | None = None) -> Target:
    assert ev.repository is not None and ev.installation is not None
    return Target(
        installation_id=ev.installation.id,
        repo=ev.repository.full_name,
        number=number,
        is_pr=is_pr,
        default_branch=ev.repository.default_branch,
        url=url,
        pr=pr,
    )


def pr_info(pr: PullRequest | dict[str, Any], repo: str) -> PullRequestInfo:
    """Head sha/ref, base ref and fork of a pull request (payload model or API dict)."""
    data = pr.model_dump() if isinstance(pr, PullRequest) else pr
    head, base = data.get("head") or {}, data.get("base") or {}
    head_repo = (head.get("repo") or {}).get("full_name")
    return PullRequestInfo(
        head_sha=head.get("sha", ""),
        head_ref=head.get("ref", ""),
        base_ref=base.get("ref", ""),
        # A head repository GitHub no longer knows (a deleted fork) is someone else's too.
        fork=not head_repo or str(head_repo).lower() != repo.lower(),
        head_repo=head_repo or "",
    )


async def _issue_text(ix: Ingress, ev: IssuesEvent, target: Target) -> str:
    """The task from the issue: title, body and the conversation so far (bots left out)."""
    parts = [f"# {ev.issue.title}", ev.issue.body or ""]
    comments = await ix.svc.api.comments(target.installation_id, target.repo, target.number, pages=1)
    for comment in comments:
        user = comment.get("user") or {}
        if user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]"):
            continue
        parts.append(f"Comment by @{user.get('login', '?')}:\n{comment.get('body') or ''}")
    text = "\n\n".join(p for p in parts if p.strip())
    return text[:MAX_CONTEXT_CHARS]


async def _active(ix: Ingress, predicate: Any) -> list[Task]:
    """GitHub tasks that have not ended and match ``predicate(task)``."""
    async with ix.svc.sessions() as session:
        rows = await session.execute(
            select(Task).where(
                col(Task.state).not_in([s.value for s in TERMINAL]), col(Task.source).like("github%")
            )
        )
        return [t for t in rows.scalars() if predicate(t)]


def _installation(task: Task) -> int | None:
    gh = GitHubLinks.of(task)
    return gh.installation_id if gh is not None else None


def build_event_registry() -> EventRegistry:
    """The registry of every GitHub event Handoff acts on."""
    events = EventRegistry()

    @events.on("issues", "labeled", model=IssuesEvent, screen=_bot)
    async def labeled(ev: IssuesEvent, ix: Ingress) -> str:
        target = _target(ev, ev.issue.number, ev.issue.pull_request is not None, ev.issue.html_url)
        config = await ix.svc.repo_configs.load(target.installation_id, target.repo, target.default_branch)
        if not ev.label or ev.label.name.lower() != config.trigger_label.lower():
            return "ignored: not the trigger label"
        return await ix.request(target, await _issue_trigger(ix, ev, target, "label"))

    @events.on("issues", "assigned", model=IssuesEvent, screen=_assigned_to_us)
    async def assigned(ev: IssuesEvent, ix: Ingress) -> str:
        target = _target(ev, ev.issue.number, ev.issue.pull_request is not None, ev.issue.html_url)
        return await ix.request(target, await _issue_trigger(ix, ev, target, "assign"))

    async def _issue_trigger(ix: Ingress, ev: IssuesEvent, target: Target, kind: str) -> Trigger:
        return Trigger(
            author=ev.sender.login,
            text=await _issue_text(ix, ev, target),
            kind=kind,
            source=TaskSource.github_issue,
            comment_kind=None,
            untrusted=True,
            force_work=True,
        )

    @events.on("issue_comment", "created", model=IssueCommentEvent, screen=_comment_screen)
    async def comment(ev: IssueCommentEvent, ix: Ingress) -> str:
        is_pr = ev.issue.pull_request is not None
        target = _target(ev, ev.issue.number, is_pr, ev.issue.html_url)
        if is_pr:
            pull = await ix.svc.api.pull(target.installation_id, target.repo, target.number)
            target = _target(ev, ev.issue.number, True, ev.issue.html_url, pr_info(pull, target.repo))
        text = command_text(ev.comment.body, ix.svc.screening.slug) or ""
        trigger = Trigger(author=ev.comment.user.login, text=text, kind="comment", comment_id=ev.comment.id)
        return await ix.request(target, trigger)

    @events.on(
        "pull_request_review_comment", "created", model=ReviewCommentEvent, screen=_review_comment_screen
    )
    async def review_comment(ev: ReviewCommentEvent, ix: Ingress) -> str:
        pr = ev.pull_request
        target = _target(
            ev, pr.number, True, pr.html_url, pr_info(pr, ev.repository.full_name if ev.repository else "")
        )
        body = ev.comment.body or ""
        text = command_text(body, ix.svc.screening.slug)
        review = (
            ReviewComment(
                path=ev.comment.path,
                line=ev.comment.line or ev.comment.original_line,
                diff_hunk=ev.comment.diff_hunk,
                commit_id=ev.comment.commit_id,
                comment_url=ev.comment.html_url,
            )
            if ev.comment.path
            else None
        )
        trigger = Trigger(
            author=ev.comment.user.login,
            text=body.strip() if text is None else text,
            kind="review_comment",
            source=TaskSource.github_review,
            comment_id=ev.comment.id,
            comment_kind="review",
            review=review,
        )
        return await ix.request(target, trigger)

    @events.on("pull_request_review", "submitted", model=ReviewEvent, screen=_review_screen)
    async def review(ev: ReviewEvent, ix: Ingress) -> str:
        pr = ev.pull_request
        target = _target(
            ev, pr.number, True, pr.html_url, pr_info(pr, ev.repository.full_name if ev.repository else "")
        )
        text = command_text(ev.review.body, ix.svc.screening.slug) or ""
        trigger = Trigger(
            author=ev.review.user.login or ev.sender.login,
            text=text,
            kind="review",
            source=TaskSource.github_review,
            comment_kind=None,
        )
        return await ix.request(target, trigger)

    @events.on("check_run", "rerequested", "requested_action", model=CheckRunEvent, screen=_own_check)
    async def check_run(ev: CheckRunEvent, ix: Ingress) -> str:
        try:
            task = await ix.svc.tasks.get(ev.check_run.external_id or "")
        except NotFound:
            return "ignored: unknown task"
        gh = GitHubLinks.of(task)
        if gh is None or gh.number is None or ev.installation is None:
            return "ignored: not a GitHub task"
        target = Target(
            installation_id=ev.installation.id,
            repo=task.repo,
            number=gh.number,
            is_pr=gh.is_pr,
            default_branch=gh.default_branch or "main",
            pr=gh.pr,
        )
        action = (
            ev.requested_action.identifier
            if ev.action == "requested_action" and ev.requested_action
            else "retry"
        )
        if action not in ("retry", "cancel"):
            return f"ignored: unknown action {action}"
        trigger = Trigger(
            author=ev.sender.login, text=action, kind="check", comment_kind=None, acknowledge=False
        )
        return await ix.request(target, trigger)

    @events.on("pull_request", "closed", model=PullRequestEvent, screen=_bot)
    async def closed(ev: PullRequestEvent, ix: Ingress) -> str:
        repo = ev.repository.full_name if ev.repository else ""
        key = f"github:{repo}#{ev.pull_request.number}"
        head = ev.pull_request.head.ref
        # A head named like a task branch counts only in the base repository itself: a fork's
        # `handoff/t_…` branch must not cancel the task whose id it borrows.
        own_head = not pr_info(ev.pull_request, repo).fork and head.startswith("handoff/")

        def affected(t: Task) -> bool:
            if t.repo != repo:
                return False
            return t.target_key == key or (own_head and f"handoff/{t.id}" == head and t.branch == head)

        tasks = await _active(ix, affected)
        done = await ix.cancel(
            tasks, f"github:{ev.sender.login}", f"pull request #{ev.pull_request.number} closed"
        )
        return f"cancelled {len(done)}"

    @events.on(
        "installation",
        "deleted",
        "suspend",
        "unsuspend",
        "created",
        "new_permissions_accepted",
        model=InstallationEvent,
        needs_repository=False,
    )
    async def installation(ev: InstallationEvent, ix: Ingress) -> str:
        inst = ev.installation.id
        removed = ev.action in ("deleted", "suspend")
        await ix.svc.set_revoked(inst, None, removed, f"installation {ev.action}")
        if not removed:
            return f"installation {ev.action}"
        tasks = await _active(ix, lambda t: _installation(t) == inst)
        done = await ix.cancel(tasks, f"github:{ev.sender.login}", f"installation {ev.action}")
        return f"installation {ev.action}: cancelled {len(done)}"

    @events.on(
        "installation_repositories",
        "added",
        "removed",
        model=InstallationRepositoriesEvent,
        needs_repository=False,
    )
    async def repositories(ev: InstallationRepositoriesEvent, ix: Ingress) -> str:
        inst = ev.installation.id
        changed = ev.repositories_removed if ev.action == "removed" else ev.repositories_added
        names = [r.full_name for r in changed if r.full_name]
        await ix.svc.set_revoked(inst, names, ev.action == "removed", f"repository {ev.action}")
        if ev.action != "removed":
            return f"{len(names)} repositories added"
        lowered = {n.lower() for n in names}
        tasks = await _active(ix, lambda t: _installation(t) == inst and t.repo.lower() in lowered)
        done = await ix.cancel(tasks, f"github:{ev.sender.login}", "repository removed from the installation")
        return f"{len(names)} repositories removed: cancelled {len(done)}"

    return events
