"""Delivering the automations' outbox operations (the GitHub notifier hands them over).

* :class:`~github_app.operations.CompletedCheck` — a completed check run, created once.
* :class:`~github_app.operations.ReviewCheck` — the "Handoff review" check run of a review task on
  its head commit: created, then edited, with one annotation per finding, 50 per request.
* :class:`~github_app.operations.ReviewSummary` — the one summary comment of a pull request and
  rule, edited in place across pushes (found by its hidden marker if a create's answer was lost).
* :class:`~github_app.operations.ReviewPost` — see :mod:`github_app.automations.review`.

Everything is rendered from the database at send time, so coalesced rows show the newest state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from core.db import Sessions
from core.models import Task
from core.outbox import Delivered, DeliveryContext, GiveUp
from core.review_records import ReviewRecords, diff_of, findings_of
from github_app.api import MAX_ANNOTATIONS, GitHubAPI, marker
from github_app.automations.api import AutomationAPI
from github_app.automations.render import ReviewView, annotations_of, check_body, summary_body
from github_app.automations.reporter import summary_key
from github_app.automations.review import ReviewPoster, threads_key
from github_app.errors import GitHubRejected
from github_app.operations import CompletedCheck, ReviewCheck, ReviewPost, ReviewSummary

AutomationOp = CompletedCheck | ReviewCheck | ReviewSummary | ReviewPost
AUTOMATION_OPS = (CompletedCheck, ReviewCheck, ReviewSummary, ReviewPost)


class AutomationNotifier:
    """Delivers the automations' GitHub operations."""

    def __init__(
        self,
        api: GitHubAPI,
        auto: AutomationAPI,
        sessions: Sessions,
        task_url: Callable[[str], str],
        secret_patterns: list[str],
    ) -> None:
        self.api = api
        self.auto = auto
        self.sessions = sessions
        self.task_url = task_url
        self.patterns = secret_patterns
        self.records = ReviewRecords(sessions)
        self.poster = ReviewPoster(api, auto, self.records, secret_patterns)

    async def deliver(self, op: AutomationOp, row_key: str, ctx: DeliveryContext) -> Delivered:
        """Make GitHub match ``op``."""
        if isinstance(op, CompletedCheck):
            return await self._completed(op, row_key, ctx)
        if isinstance(op, ReviewCheck):
            return await self._review_check(op, row_key, ctx)
        if isinstance(op, ReviewSummary):
            return await self._summary(op, row_key, ctx)
        posted = await self.poster.post(op, row_key, ctx)
        # The summary says how many threads were resolved: bring it up to date after posting.
        summary = ReviewSummary(
            installation_id=op.installation_id,
            repo=op.repo,
            task_id=op.task_id,
            number=op.number,
            rule=op.rule,
        )
        await self._summary(summary, summary_key(op.repo, op.number, op.rule), ctx)
        return posted

    async def _view(self, task_id: str, rule: str | None = None, number: int | None = None) -> ReviewView:
        async with self.sessions() as session:
            task = await session.get(Task, task_id)
        if task is None:
            raise GiveUp("task no longer exists")
        record = await self.records.get(task_id)
        placements = []
        if record is not None and task.state == "succeeded":
            diff = diff_of(record)
            placements = [diff.place(f) for f in findings_of(record)]
        return ReviewView(task, record, placements, self.task_url(task.id), secret_patterns=self.patterns)

    async def _completed(self, op: CompletedCheck, row_key: str, ctx: DeliveryContext) -> Delivered:
        ref = await ctx.recall(row_key)
        if ref and ref.get("id"):
            return Delivered(ref)
        external = row_key[-40:]
        if ref and ref.get("creating"):
            found = await self.api.find_check(op.installation_id, op.repo, op.head_sha, op.name, external)
            if found is not None:
                await ctx.remember(row_key, {"id": found})
                return Delivered({"id": found})
        await ctx.remember(row_key, {"creating": True})
        created = await self.api.create_check(
            op.installation_id,
            op.repo,
            {
                "name": op.name,
                "head_sha": op.head_sha,
                "external_id": external,
                "status": "completed",
                "conclusion": op.conclusion,
                "output": {"title": op.title[:200], "summary": op.summary[:60_000]},
            },
        )
        await ctx.remember(row_key, {"id": int(created["id"])})
        return Delivered({"id": int(created["id"])})

    async def _review_check(self, op: ReviewCheck, row_key: str, ctx: DeliveryContext) -> Delivered:
        view = await self._view(op.task_id)
        body = check_body(view)
        notes = annotations_of(view) if body["status"] == "completed" else []
        inst, repo = op.installation_id, op.repo
        ref = dict(await ctx.recall(row_key) or {})
        if not ref.get("id") and ref.get("creating"):
            found = await self.api.find_check(inst, repo, op.head_sha, body["name"], op.task_id)
            if found is not None:
                ref = {"id": found}
        sent = int(ref.get("annotations", 0))
        first = notes[sent : sent + MAX_ANNOTATIONS]
        if first:
            body["output"]["annotations"] = first
        if ref.get("id"):
            try:
                await self.api.update_check(inst, repo, int(ref["id"]), body)
            except GitHubRejected as exc:
                if exc.status != 404:
                    raise
                ref, sent = {}, 0
        if not ref.get("id"):
            await ctx.remember(row_key, {"creating": True})
            created = await self.api.create_check(inst, repo, {**body, "head_sha": op.head_sha})
            ref = {"id": int(created["id"])}
        ref["annotations"] = sent + len(first)
        await ctx.remember(row_key, ref)
        # GitHub takes 50 annotations per request: the rest go in further updates.
        while ref["annotations"] < len(notes):
            start = int(ref["annotations"])
            more = notes[start : start + MAX_ANNOTATIONS]
            output = {**body["output"], "annotations": more}
            await self.api.update_check(inst, repo, int(ref["id"]), {"output": output})
            ref["annotations"] = start + len(more)
            await ctx.remember(row_key, ref)
        return Delivered(ref)

    async def _summary(self, op: ReviewSummary, row_key: str, ctx: DeliveryContext) -> Delivered:
        latest = await self.records.latest(op.repo, op.number, op.rule)
        view = await self._view(latest.task_id if latest is not None else op.task_id)
        threads = await ctx.recall(threads_key(op.repo, op.number, op.rule)) or {}
        view.resolved = int(threads.get("resolved") or 0)
        body = summary_body(view, row_key, op.rule)
        inst, repo = op.installation_id, op.repo
        ref: dict[str, Any] | None = await ctx.recall(row_key)
        if ref and ref.get("id"):
            try:
                await self.api.update_comment(inst, repo, int(ref["id"]), body)
                return Delivered(ref)
            except GitHubRejected as exc:
                if exc.status != 404:
                    raise
                ref = None  # someone deleted it: post it again
        if ref and ref.get("creating"):
            since = view.task.created_at - timedelta(days=30)
            found = await self.api.find_comment(inst, repo, op.number, row_key, since)
            if found is not None:
                await self.api.update_comment(inst, repo, found, body)
                await ctx.remember(row_key, {"id": found})
                return Delivered({"id": found})
        await ctx.remember(row_key, {"creating": True})
        created = await self.api.create_comment(inst, repo, op.number, body)
        await ctx.remember(row_key, {"id": int(created["id"])})
        return Delivered({"id": int(created["id"])})


__all__ = ["AUTOMATION_OPS", "AutomationNotifier", "AutomationOp", "marker"]
