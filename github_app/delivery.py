"""The GitHub notifier: makes GitHub match one outbox row, without ever writing twice.

* ``tracking`` / ``check`` (upserts) — render the task from the database, then edit the comment or
  check run remembered for the key; create it the first time. Before a create the notifier
  remembers ``{"creating": true}``: if the create's answer is lost (a 502 after GitHub applied it, a
  crash), the next attempt finds the object by its hidden marker (comment) or ``external_id`` (check
  run) instead of creating a second one.
* ``comment`` (append) — a reply, created once the same way; ``reaction`` — 👀, idempotent at GitHub.

Failures map onto the outbox contract: rate limits → :class:`RetryLater` for the installation's
bucket with GitHub's delay, 5xx/timeouts → :class:`RetryLater` for the key, refusals → :class:`GiveUp`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from core.db import Sessions
from core.models import Outbox
from core.outbox import Delivered, DeliveryContext, GiveUp, RateRule, RetryLater
from core.snapshot import load_snapshot
from github_app.api import MAX_ANNOTATIONS, GitHubAPI, marker
from github_app.automations.notify import AUTOMATION_OPS, AutomationNotifier
from github_app.client import ack_lane
from github_app.errors import GitHubRateLimited, GitHubRejected, GitHubUnavailable, InstallationRevoked
from github_app.operations import (
    CHANNEL,
    OPERATIONS,
    AnyGitHubOperation,
    Check,
    Comment,
    Reaction,
    Tracking,
)
from github_app.render import Page, check_run, tracking_comment


class GitHubNotifier:
    """Delivers ``github`` outbox rows."""

    channel = CHANNEL

    def __init__(
        self,
        api: GitHubAPI,
        sessions: Sessions,
        task_url: Callable[[str], str],
        secret_patterns: Sequence[str] = (),
        *,
        check_name: str = "Handoff",
        write_interval_s: float = 1.0,
        edit_interval_s: float = 2.0,
        ack_reserve: int = 5,
        automations: AutomationNotifier | None = None,
    ) -> None:
        self.api = api
        self.automations = automations
        self.sessions = sessions
        self.task_url = task_url
        self.secret_patterns = list(secret_patterns)
        self.check_name = check_name
        self.write_interval_s = write_interval_s
        self.edit_interval_s = edit_interval_s
        self.ack_reserve = ack_reserve

    def rate_rules(self, row: Outbox) -> list[RateRule]:
        """Writes of one installation spend from one budget (``write_interval_s`` each, a burst of
        twice ``ack_reserve``): acknowledgements may use all of it, other writes leave them the last
        ``ack_reserve`` and go ``write_interval_s`` apart; one object is edited at most every
        ``edit_interval_s``. So a new request's 👀 never queues behind other tasks' progress."""
        op = OPERATIONS.parse_or_none(row)
        installation = op.installation_id if op is not None else None
        budget = RateRule(
            f"github:installation:{installation}:budget", self.write_interval_s, burst=2 * self.ack_reserve
        )
        if op is not None and op.ack:
            return [budget]
        rules = [
            RateRule(f"github:installation:{installation}", self.write_interval_s),
            replace(budget, reserve=self.ack_reserve),
        ]
        if row.kind == "upsert":
            rules.append(RateRule(f"github:object:{row.key}", self.edit_interval_s, per_object=True))
        return rules

    async def deliver(self, row: Outbox, ctx: DeliveryContext) -> Delivered:
        """Send ``row``; raise :class:`RetryLater` or :class:`GiveUp` as the contract says."""
        op = OPERATIONS.parse(row)
        try:
            with ack_lane(op.ack):
                return await self._deliver(op, row, ctx)
        except GitHubRateLimited as exc:
            raise RetryLater(str(exc), exc.retry_after_s, scope="bucket") from exc
        except GitHubUnavailable as exc:
            raise RetryLater(str(exc), None, scope="key") from exc
        except InstallationRevoked as exc:
            raise GiveUp(str(exc)) from exc
        except GitHubRejected as exc:
            raise GiveUp(str(exc)) from exc

    async def _deliver(self, op: AnyGitHubOperation, row: Outbox, ctx: DeliveryContext) -> Delivered:
        if isinstance(op, AUTOMATION_OPS):
            if self.automations is None:
                raise GiveUp("automations are not set up in this process")
            return await self.automations.deliver(op, row.key, ctx)
        if isinstance(op, Reaction):
            return await self._reaction(op)
        if isinstance(op, Comment):
            return await self._reply(op, row, ctx)
        if isinstance(op, Tracking):
            return await self._tracking(op, row, ctx)
        return await self._check(op, row, ctx)

    async def _page(self, task_id: str) -> Page:
        """The task as GitHub shows it, read now (:class:`GiveUp` once the task is gone)."""
        snap = await load_snapshot(self.sessions, task_id, details=True)
        if snap is None:
            raise GiveUp("task no longer exists")
        return Page(snap, self.task_url(task_id), self.secret_patterns)

    # -- ops ----------------------------------------------------------------------------------

    async def _reaction(self, op: Reaction) -> Delivered:
        if op.comment_kind == "issue_itself" or not op.comment_id:
            await self.api.react_issue(op.installation_id, op.repo, op.number, op.content)
        else:
            await self.api.react(op.installation_id, op.repo, op.comment_id, op.comment_kind, op.content)
        return Delivered()

    async def _reply(self, op: Comment, row: Outbox, ctx: DeliveryContext) -> Delivered:
        ref = await ctx.recall(row.key)
        if ref and ref.get("id"):
            return Delivered(ref)  # already posted
        body = f"{marker(row.key)}\n{op.body}"
        comment_id = await self._create_comment(op, op.number, row, ctx, ref, body, since=row.created_at)
        return Delivered({"id": comment_id})

    async def _tracking(self, op: Tracking, row: Outbox, ctx: DeliveryContext) -> Delivered:
        page = await self._page(op.task_id)
        if op.number is None:
            raise GiveUp("the task has no issue or pull request to comment on")
        body = tracking_comment(page, row.key)
        inst, repo = op.installation_id, op.repo
        ref = await ctx.recall(row.key)
        if ref and ref.get("id"):
            try:
                await self.api.update_comment(inst, repo, int(ref["id"]), body)
                return Delivered(ref)
            except GitHubRejected as exc:
                if exc.status != 404:
                    raise
                ref = None  # someone deleted it: post it again
        comment_id = await self._create_comment(
            op, op.number, row, ctx, ref, body, since=page.snap.task.created_at
        )
        return Delivered({"id": comment_id})

    async def _create_comment(
        self,
        op: Comment | Tracking,
        number: int,
        row: Outbox,
        ctx: DeliveryContext,
        ref: dict[str, Any] | None,
        body: str,
        since: Any,
    ) -> int:
        inst, repo = op.installation_id, op.repo
        if ref and ref.get("creating"):
            # An earlier create may have landed: look for our marker before posting again.
            found = await self.api.find_comment(inst, repo, number, row.key, since - timedelta(minutes=5))
            if found is not None:
                await ctx.remember(row.key, {"id": found})
                if isinstance(op, Tracking):
                    await self.api.update_comment(inst, repo, found, body)
                return found
        await ctx.remember(row.key, {"creating": True})
        created = await self.api.create_comment(inst, repo, number, body)
        await ctx.remember(row.key, {"id": int(created["id"])})
        return int(created["id"])

    async def _check(self, op: Check, row: Outbox, ctx: DeliveryContext) -> Delivered:
        page = await self._page(op.task_id)
        snap = page.snap
        inst, repo, sha = op.installation_id, op.repo, op.head_sha
        body = check_run(page, self.check_name)
        ref = dict(await ctx.recall(row.key) or {})
        # A new run after a completed one gets a fresh check run; the old one stays as history.
        if ref.get("id") and ref.get("completed") and body["status"] != "completed":
            ref = {}
        if not ref.get("id") and ref.get("creating"):
            found = await self.api.find_check(inst, repo, sha, self.check_name, snap.task.id)
            if found is not None:
                ref = {"id": found}
        annotations = snap.annotations
        sent = int(ref.get("annotations", 0)) if ref.get("run") == snap.attempt else 0
        batch, sent_after = (
            annotations[sent : sent + MAX_ANNOTATIONS],
            min(len(annotations), sent + MAX_ANNOTATIONS),
        )
        if batch:
            body["output"]["annotations"] = batch
        if ref.get("id"):
            try:
                await self.api.update_check(inst, repo, int(ref["id"]), body)
            except GitHubRejected as exc:
                if exc.status != 404:
                    raise
                ref = {}
        if not ref.get("id"):
            await ctx.remember(row.key, {"creating": True})
            created = await self.api.create_check(inst, repo, {**body, "head_sha": sha})
            ref = {"id": int(created["id"])}
        ref.update(completed=body["status"] == "completed", run=snap.attempt, annotations=sent_after)
        await ctx.remember(row.key, ref)
        # GitHub takes 50 annotations per request: append the rest in further updates.
        while ref["annotations"] < len(annotations):
            start = int(ref["annotations"])
            more = annotations[start : start + MAX_ANNOTATIONS]
            output = {
                "title": body["output"]["title"],
                "summary": body["output"]["summary"],
                "annotations": more,
            }
            await self.api.update_check(inst, repo, int(ref["id"]), {"output": output})
            ref["annotations"] = start + len(more)
            await ctx.remember(row.key, ref)
        return Delivered(ref)
