"""The fake GitHub's automation endpoints: pull request files and reviews, review threads
(GraphQL), check suites, Actions jobs and their logs.

Mixed into :class:`tests.fakes.github_api.FakeGitHub`; requests are validated against the OpenAPI
subset like every other. What GitHub refuses, this refuses (and records as an error the tests
assert is empty): a review comment on a line outside the pull request's diff fails the whole
review with 422, as on GitHub; a review on a commit that is not the head is refused too.

Job logs answer ``302`` to a short-lived download address on this server (``/_blobs/logs/...``,
unauthenticated, with a token in the query), as GitHub's answer points at blob storage.
GraphQL serves the two documents Handoff sends: the review threads of a pull request, and
``resolveReviewThread``.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.MULTILINE)


def _ranges(patch: str, side: str) -> list[tuple[int, int]]:
    found = []
    for m in _HUNK.finditer(patch):
        start, length = (
            (int(m.group(3)), int(m.group(4) or 1))
            if side == "RIGHT"
            else (
                int(m.group(1)),
                int(m.group(2) or 1),
            )
        )
        if length:
            found.append((start, start + length - 1))
    return found


class AutomationsFake:
    """State and operations; expects the attributes and helpers of ``FakeGitHub``."""

    # Provided by FakeGitHub.
    ids: Any
    pulls: dict[tuple[str, int], dict[str, Any]]
    checks: dict[int, dict[str, Any]]
    tokens: dict[str, dict[str, Any]]
    installations: set[int]
    bot: dict[str, Any]
    errors: list[str]

    def _init_automations(self) -> None:
        self.pull_files: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.reviews: dict[int, dict[str, Any]] = {}
        self.review_comments: dict[int, dict[str, Any]] = {}
        self.suite_runs: dict[int, list[int]] = {}
        self.run_jobs: dict[int, list[dict[str, Any]]] = {}
        self.job_logs: dict[int, str] = {}
        self.blob_tokens: dict[str, int] = {}
        self.graphql_calls: list[dict[str, Any]] = []
        self.installation_of: dict[str, int] = {}
        # Repositories the App is not installed on (GET /repos/{o}/{r}/installation answers 404).
        self.uninstalled: set[str] = set()

    def _now(self) -> str:  # pragma: no cover - provided by FakeGitHub
        raise NotImplementedError

    # -- test helpers ---------------------------------------------------------------------------

    def set_files(self, repo: str, number: int, files: list[dict[str, Any]], sha: str | None = None) -> None:
        """The files (with patches) of pull request ``number``; ``sha`` moves its head."""
        self.pull_files[(repo, number)] = files
        if sha is not None:
            self.pulls[(repo, number)]["head"]["sha"] = sha

    def add_suite(self, repo: str, suite_id: int, runs: list[dict[str, Any]]) -> None:
        """Check runs (with output and annotations) of a check suite."""
        ids = []
        for run in runs:
            cid = int(run.get("id") or next(self.ids))
            self.checks[cid] = {
                "id": cid,
                "repo": repo,
                "annotations": [],
                "check_suite": {"id": suite_id},
                **run,
            }
            ids.append(cid)
        self.suite_runs[suite_id] = ids

    def open_threads(self, repo: str, number: int) -> list[dict[str, Any]]:
        """Review comments on the pull request whose thread is not resolved."""
        return [
            c for c in self.review_comments.values() if c["_target"] == (repo, number) and not c["_resolved"]
        ]

    # -- repositories -----------------------------------------------------------------------------

    def op_apps_get_repo_installation(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        repo = f"{p['owner']}/{p['repo']}"
        inst = self.installation_of.get(repo) or next(iter(self.installations), None)
        if inst is None or repo in self.uninstalled:
            return 404, {"message": "Not Found"}
        return 200, {"id": inst, "account": {"login": p["owner"]}, "app_id": 1, "target_type": "Organization"}

    def op_repos_get(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        repo = f"{p['owner']}/{p['repo']}"
        return 200, {"id": 1, "name": p["repo"], "full_name": repo, "default_branch": "main", "private": True}

    # -- pull requests --------------------------------------------------------------------------

    def op_pulls_list_files(self, p: dict[str, str], q: dict[str, str], body: Any, r: Any) -> tuple[int, Any]:
        files = self.pull_files.get((f"{p['owner']}/{p['repo']}", int(p["pull_number"])), [])
        per_page, page = int(q.get("per_page", 30)), int(q.get("page", 1))
        return 200, files[(page - 1) * per_page : page * per_page]

    def _diff_problem(self, repo: str, number: int, comment: dict[str, Any]) -> str | None:
        files = {f["filename"]: f for f in self.pull_files.get((repo, number), [])}
        entry = files.get(comment["path"])
        if entry is None or not entry.get("patch"):
            return f"Path {comment['path']} is not part of the diff"
        side = comment.get("side", "RIGHT")
        ranges = _ranges(entry["patch"], side)
        line = comment.get("line")
        hunk = next((h for h in ranges if line is not None and h[0] <= line <= h[1]), None)
        if hunk is None:
            return f"Line {line} of {comment['path']} could not be resolved (not part of the diff)"
        start = comment.get("start_line")
        if start is not None and not (hunk[0] <= start < line):
            return f"start_line {start} must be in the same hunk, before line {line}"
        return None

    def op_pulls_create_review(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        repo, number = f"{p['owner']}/{p['repo']}", int(p["pull_number"])
        pr = self.pulls.get((repo, number))
        if pr is None:
            return 404, {"message": "Not Found"}
        if body.get("commit_id") and body["commit_id"] != pr["head"]["sha"]:
            self.errors.append(f"review on {body['commit_id']}, not the head {pr['head']['sha']}")
            return 422, {"message": "commit_id is not the pull request's head"}
        for comment in body.get("comments", []):
            problem = self._diff_problem(repo, number, comment)
            if problem is not None:
                self.errors.append(f"pulls/create-review: {problem}")
                return 422, {"message": "Unprocessable Entity", "errors": [problem]}
        rid = next(self.ids)
        review = {
            "id": rid,
            "node_id": f"PRR_{rid}",
            "user": self.bot,
            "body": body.get("body", ""),
            "state": {"COMMENT": "COMMENTED"}.get(body.get("event", ""), "PENDING"),
            "commit_id": body.get("commit_id", pr["head"]["sha"]),
            "html_url": f"https://github.com/{repo}/pull/{number}#pullrequestreview-{rid}",
            "pull_request_url": f"https://api.github.com/repos/{repo}/pulls/{number}",
            "submitted_at": self._now(),
            "_target": (repo, number),
        }
        self.reviews[rid] = review
        for comment in body.get("comments", []):
            cid = next(self.ids)
            self.review_comments[cid] = {
                "id": cid,
                "node_id": f"PRRC_{cid}",
                "pull_request_review_id": rid,
                "path": comment["path"],
                "line": comment.get("line"),
                "start_line": comment.get("start_line"),
                "side": comment.get("side", "RIGHT"),
                "body": comment["body"],
                "commit_id": review["commit_id"],
                "user": self.bot,
                "created_at": self._now(),
                "_target": (repo, number),
                "_thread": f"PRRT_{cid}",
                "_resolved": False,
            }
        return 200, {k: v for k, v in review.items() if not k.startswith("_")}

    def op_pulls_list_reviews(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        target = (f"{p['owner']}/{p['repo']}", int(p["pull_number"]))
        found = [
            {k: v for k, v in rv.items() if not k.startswith("_")}
            for rv in self.reviews.values()
            if rv["_target"] == target
        ]
        return 200, found

    def op_pulls_list_review_comments(
        self, p: dict[str, str], q: dict[str, str], body: Any, r: Any
    ) -> tuple[int, Any]:
        target = (f"{p['owner']}/{p['repo']}", int(p["pull_number"]))
        items = [c for c in self.review_comments.values() if c["_target"] == target]
        per_page, page = int(q.get("per_page", 30)), int(q.get("page", 1))
        return 200, [
            {k: v for k, v in c.items() if not k.startswith("_")}
            for c in items[(page - 1) * per_page : page * per_page]
        ]

    def op_pulls_update_review_comment(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        comment = self.review_comments.get(int(p["comment_id"]))
        if comment is None:
            return 404, {"message": "Not Found"}
        comment["body"] = body["body"]
        return 200, {k: v for k, v in comment.items() if not k.startswith("_")}

    # -- GraphQL --------------------------------------------------------------------------------

    async def graphql(self, request: Request) -> Response:
        """POST /graphql: review threads and resolveReviewThread (installation tokens only)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        minted = self.tokens.get(token) if scheme.lower() in ("token", "bearer") else None
        if minted is None or minted["revoked"]:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        payload = await request.json()
        query, variables = str(payload.get("query", "")), payload.get("variables") or {}
        self.graphql_calls.append({"query": query, "variables": variables})
        if "resolveReviewThread" in query:
            for comment in self.review_comments.values():
                if comment["_thread"] == variables.get("thread"):
                    comment["_resolved"] = True
                    return JSONResponse(
                        {
                            "data": {
                                "resolveReviewThread": {
                                    "thread": {"id": comment["_thread"], "isResolved": True}
                                }
                            }
                        }
                    )
            return JSONResponse(
                {"data": None, "errors": [{"type": "NOT_FOUND", "message": "no such thread"}]}
            )
        if "reviewThreads" in query:
            repo = f"{variables.get('owner')}/{variables.get('name')}"
            if minted["repositories"] is not None and variables.get("name") not in minted["repositories"]:
                return JSONResponse({"data": None, "errors": [{"type": "FORBIDDEN", "message": repo}]})
            target = (repo, int(variables.get("number", 0)))
            nodes = [
                {
                    "id": c["_thread"],
                    "isResolved": c["_resolved"],
                    "comments": {"nodes": [{"databaseId": c["id"]}]},
                }
                for c in self.review_comments.values()
                if c["_target"] == target
            ]
            page = {"pageInfo": {"hasNextPage": False, "endCursor": None}, "nodes": nodes}
            return JSONResponse({"data": {"repository": {"pullRequest": {"reviewThreads": page}}}})
        self.errors.append(f"unexpected GraphQL document: {query[:200]}")
        return JSONResponse({"data": None, "errors": [{"message": "unexpected document"}]})

    # -- CI results -----------------------------------------------------------------------------

    def op_checks_list_for_suite(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        runs = [self.checks[cid] for cid in self.suite_runs.get(int(p["check_suite_id"]), [])]
        shown = [{k: v for k, v in c.items() if k not in ("annotations", "repo")} for c in runs]
        for c in shown:
            c.setdefault("output", {})["annotations_count"] = len(self.checks[c["id"]]["annotations"])
        return 200, {"total_count": len(shown), "check_runs": shown}

    def op_checks_list_annotations(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        check = self.checks.get(int(p["check_run_id"]))
        return (200, list(check["annotations"])) if check else (404, {"message": "Not Found"})

    def op_actions_list_jobs_for_workflow_run(
        self, p: dict[str, str], q: Any, body: Any, r: Any
    ) -> tuple[int, Any]:
        jobs = self.run_jobs.get(int(p["run_id"]), [])
        return 200, {"total_count": len(jobs), "jobs": jobs}

    def op_actions_download_job_logs_for_workflow_run(
        self, p: dict[str, str], q: Any, body: Any, r: Request
    ) -> tuple[int, Any]:
        job_id = int(p["job_id"])
        if job_id not in self.job_logs:
            return 404, {"message": "Not Found"}
        blob = secrets.token_urlsafe(12)
        self.blob_tokens[blob] = job_id
        base = str(r.base_url).rstrip("/")
        return 302, RedirectResponse(f"{base}/_blobs/logs/{job_id}?sig={blob}", status_code=302)

    async def blob(self, request: Request, job_id: int) -> Response:
        """The short-lived log download: no Authorization expected (and none must arrive)."""
        if request.headers.get("authorization"):
            self.errors.append("credentials were sent to the log download address")
        if self.blob_tokens.pop(request.query_params.get("sig", ""), None) != job_id:
            return PlainTextResponse("expired", status_code=403)
        return PlainTextResponse(self.job_logs[job_id])
