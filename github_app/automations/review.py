"""Posting a review run's findings without piling up reviews.

Per pull request and rule Handoff remembers its open threads (``github:review-threads:…``: the
comment id and the finding's fingerprint of each). After a run:

* findings whose fingerprint is already an open thread are not posted again;
* the others on lines the diff shows become **one** pull request review (``event: COMMENT``,
  ``commit_id`` = the reviewed head, ``line``/``side``/``start_line``, suggestion blocks) — none
  when nothing is new; the rest are left to the summary;
* open threads whose finding is gone are resolved (GraphQL ``resolveReviewThread``) and marked so.

A review whose answer was lost is found again by its hidden marker before posting another. A run
that is no longer the newest review of the pull request, or whose head commit was pushed over,
posts nothing inline (a newer review or the summary says what holds).
"""

from __future__ import annotations

import logging
from typing import Any

from core.outbox import Delivered, DeliveryContext
from core.review import Placement
from core.review_records import ReviewRecords, diff_of, findings_of
from github_app.api import GitHubAPI, marker
from github_app.automations.api import AutomationAPI
from github_app.automations.render import FINDING_MARK, comment_body
from github_app.errors import GitHubError
from github_app.operations import ReviewPost

log = logging.getLogger(__name__)
THREADS_KEY = "github:review-threads:{repo}#{number}:{rule}"


def threads_key(repo: str, number: int, rule: str) -> str:
    """Where the open threads of a pull request and rule are remembered."""
    return THREADS_KEY.format(repo=repo, number=number, rule=rule)


def _inline(p: Placement, patterns: list[str]) -> dict[str, Any]:
    comment: dict[str, Any] = {
        "path": p.finding.path,
        "line": p.line,
        "side": p.finding.side,
        "body": comment_body(p.finding, patterns),
    }
    if p.start_line is not None and p.start_line < p.line:
        comment.update(start_line=p.start_line, start_side=p.finding.side)
    return comment


class ReviewPoster:
    """Carries out :class:`~github_app.operations.ReviewPost` rows."""

    def __init__(
        self, api: GitHubAPI, auto: AutomationAPI, records: ReviewRecords, secret_patterns: list[str]
    ) -> None:
        self.api = api
        self.auto = auto
        self.records = records
        self.patterns = secret_patterns

    async def post(self, op: ReviewPost, row_key: str, ctx: DeliveryContext) -> Delivered:
        """Post the run's new findings and resolve the gone ones (see the module docstring)."""
        record = await self.records.get(op.task_id)
        if record is None or record.run_id != op.run_id:
            return Delivered({"skipped": "no findings recorded for this run"})
        latest = await self.records.latest(op.repo, op.number, op.rule)
        if latest is not None and latest.task_id != op.task_id:
            return Delivered({"skipped": "a newer review of this pull request exists"})
        pull = await self.api.pull(op.installation_id, op.repo, op.number)
        if str((pull.get("head") or {}).get("sha") or "") != record.head_sha:
            return Delivered({"skipped": f"the pull request moved on from {record.head_sha[:7]}"})
        diff = diff_of(record)
        placements = [diff.place(f) for f in findings_of(record)]
        key = threads_key(op.repo, op.number, op.rule)
        state = dict(await ctx.recall(key) or {})
        threads: list[dict[str, Any]] = list(state.get("threads") or [])
        open_fps = {t["fingerprint"] for t in threads if not t.get("resolved")}
        new = [p for p in placements if p.inline and p.finding.fingerprint not in open_fps]
        ref = dict(await ctx.recall(row_key) or {})
        if new and not ref.get("review_id"):
            review_id = await self._create(op, record.head_sha, new, row_key, ref, ctx)
            comments = await self.auto.review_comments(op.installation_id, op.repo, op.number)
            threads.extend(_posted(comments, review_id, new))
            state["threads"] = threads
            await ctx.remember(key, state)
            ref["review_id"] = review_id
        current = {p.finding.fingerprint for p in placements}
        gone = [t for t in threads if not t.get("resolved") and t["fingerprint"] not in current]
        resolved = await self._resolve(op, gone, record.head_sha) if gone else 0
        state["threads"] = threads
        state["resolved"] = int(state.get("resolved") or 0) + resolved
        await ctx.remember(key, state)
        return Delivered({**ref, "new": len(new), "resolved": resolved})

    async def _create(
        self,
        op: ReviewPost,
        sha: str,
        new: list[Placement],
        row_key: str,
        ref: dict[str, Any],
        ctx: DeliveryContext,
    ) -> int:
        tag = marker(row_key)
        if ref.get("creating"):
            # An earlier create may have landed: find it by its marker before posting again.
            for review in await self.auto.reviews(op.installation_id, op.repo, op.number):
                if tag in (review.get("body") or ""):
                    await ctx.remember(row_key, {"review_id": int(review["id"])})
                    return int(review["id"])
        await ctx.remember(row_key, {"creating": True})
        body = {
            "commit_id": sha,
            "event": "COMMENT",
            "body": f"{tag}\n**Handoff review** of `{sha[:7]}`: {len(new)} new finding(s) on the changed "
            "lines. The summary comment lists the rest.",
            "comments": [_inline(p, self.patterns) for p in new],
        }
        created = await self.auto.create_review(op.installation_id, op.repo, op.number, body)
        await ctx.remember(row_key, {"review_id": int(created["id"])})
        return int(created["id"])

    async def _resolve(self, op: ReviewPost, gone: list[dict[str, Any]], sha: str) -> int:
        """Resolve Handoff's threads whose findings are gone; how many were resolved."""
        by_comment = {
            t["comment_id"]: t for t in await self.auto.review_threads(op.installation_id, op.repo, op.number)
        }
        done = 0
        for entry in gone:
            thread = by_comment.get(entry.get("comment_id"))
            try:
                if thread is not None and not thread["resolved"]:
                    await self.auto.resolve_thread(op.installation_id, op.repo, thread["id"])
                if entry.get("comment_id"):
                    note = f"✅ Resolved by Handoff: not found any more at `{sha[:7]}`.\n\n{entry.get('body', '')}"
                    await self.auto.edit_review_comment(
                        op.installation_id, op.repo, int(entry["comment_id"]), note[:60_000]
                    )
            except GitHubError as exc:  # a thread someone deleted: it is gone anyway
                log.info("thread of comment %s not resolved: %s", entry.get("comment_id"), exc)
            entry["resolved"] = True
            done += 1
        return done


def _posted(comments: list[dict[str, Any]], review_id: int, new: list[Placement]) -> list[dict[str, Any]]:
    """The threads a review opened: each comment's id and finding, matched by the hidden marker."""
    wanted = {FINDING_MARK.format(fp=p.finding.fingerprint): p for p in new}
    threads = []
    for comment in comments:
        if comment.get("pull_request_review_id") != review_id:
            continue
        body = str(comment.get("body") or "")
        for tag, p in wanted.items():
            if tag in body:
                threads.append(
                    {
                        "comment_id": int(comment["id"]),
                        "fingerprint": p.finding.fingerprint,
                        "path": p.finding.path,
                        "line": p.line,
                        "body": body,
                        "resolved": False,
                    }
                )
    return threads
