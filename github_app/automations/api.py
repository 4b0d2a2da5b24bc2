"""The GitHub calls automations make, each with the narrowest permission set that allows it.

Reads for matching and context (a pull request's files, a check suite's runs and annotations, a
workflow run's jobs and their logs), writes for reviews (a review with inline comments, editing and
resolving Handoff's own earlier threads). Plain dicts come back, as from :mod:`github_app.api`.

Job logs: GitHub answers ``302`` to a short-lived download URL. The redirect is not followed by
the API client (the installation token must never travel to another host); the log is fetched
from that URL without credentials, streamed and cut at ``max_bytes``.
"""

from __future__ import annotations

from typing import Any, cast

import httpx
from githubkit import GitHub

from github_app.auth import READ, REPORT
from github_app.client import GitHubClient
from github_app.errors import GitHubRejected, GitHubUnavailable

# Checks and Actions reads (the manifest asks for `actions: read`; `checks: write` covers reading).
CI_READ = {"metadata": "read", "checks": "read", "actions": "read", "pull_requests": "read"}
MAX_FILE_PAGES = 30  # GitHub lists at most 3,000 files of a pull request
MAX_LOG_READ = 64 * 1024 * 1024  # of one job log; its tail is what matters

_THREADS = """
query($owner: String!, $name: String!, $number: Int!, $after: String) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviewThreads(first: 100, after: $after) {
        pageInfo { hasNextPage endCursor }
        nodes { id isResolved comments(first: 1) { nodes { databaseId } } }
      }
    }
  }
}
"""
_RESOLVE = """
mutation($thread: ID!) {
  resolveReviewThread(input: {threadId: $thread}) { thread { id isResolved } }
}
"""


def _split(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    return owner, name


class AutomationAPI:
    """Domain calls of automations (matching, CI context, reviews)."""

    def __init__(self, client: GitHubClient) -> None:
        self.client = client

    # -- repositories ---------------------------------------------------------------------------

    async def installation(self, repo: str) -> int | None:
        """The App's installation on ``repo`` (``None``: not installed there)."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.apps.async_get_repo_installation(owner, name)

        try:
            data = (await self.client.as_app(get)).json()
        except GitHubRejected as exc:
            if exc.status == 404:
                return None
            raise
        return int(data["id"])

    async def repository(self, inst: int, repo: str) -> dict[str, Any]:
        """The repository (its default branch among the rest)."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.repos.async_get(owner, name)

        return cast(dict[str, Any], (await self.client.call(inst, repo, get, permissions=READ)).json())

    # -- pull requests --------------------------------------------------------------------------

    async def pull_files(self, inst: int, repo: str, number: int) -> list[dict[str, Any]]:
        """The files a pull request changes, with their patches (GitHub lists at most 3,000)."""
        owner, name = _split(repo)
        files: list[dict[str, Any]] = []
        for page in range(1, MAX_FILE_PAGES + 1):

            async def get(gh: GitHub[Any], page: int = page) -> Any:
                return await gh.rest.pulls.async_list_files(owner, name, number, per_page=100, page=page)

            batch = (await self.client.call(inst, repo, get, permissions=READ)).json()
            files.extend(batch)
            if len(batch) < 100:
                break
        return files

    async def create_review(self, inst: int, repo: str, number: int, body: dict[str, Any]) -> dict[str, Any]:
        """Post a pull request review (``commit_id``, ``event``, ``body``, ``comments``)."""
        owner, name = _split(repo)

        async def post(gh: GitHub[Any]) -> Any:
            return await gh.rest.pulls.async_create_review(owner, name, number, data=cast(Any, body))

        result = await self.client.call(inst, repo, post, permissions=REPORT, write=True)
        return cast(dict[str, Any], result.json())

    async def reviews(self, inst: int, repo: str, number: int) -> list[dict[str, Any]]:
        """The pull request's reviews (the first 100), oldest first."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.pulls.async_list_reviews(owner, name, number, per_page=100)

        return cast(list[dict[str, Any]], (await self.client.call(inst, repo, get, permissions=READ)).json())

    async def review_comments(self, inst: int, repo: str, number: int) -> list[dict[str, Any]]:
        """The pull request's review comments (the first 300)."""
        owner, name = _split(repo)
        found: list[dict[str, Any]] = []
        for page in (1, 2, 3):

            async def get(gh: GitHub[Any], page: int = page) -> Any:
                return await gh.rest.pulls.async_list_review_comments(
                    owner, name, number, per_page=100, page=page
                )

            batch = (await self.client.call(inst, repo, get, permissions=READ)).json()
            found.extend(batch)
            if len(batch) < 100:
                break
        return found

    async def edit_review_comment(self, inst: int, repo: str, comment_id: int, body: str) -> None:
        """Edit one of Handoff's review comments."""
        owner, name = _split(repo)

        async def patch(gh: GitHub[Any]) -> Any:
            return await gh.rest.pulls.async_update_review_comment(owner, name, comment_id, body=body)

        await self.client.call(inst, repo, patch, permissions=REPORT, write=True)

    async def review_threads(self, inst: int, repo: str, number: int) -> list[dict[str, Any]]:
        """The pull request's review threads: ``{"id", "resolved", "comment_id"}`` (GraphQL)."""
        owner, name = _split(repo)
        threads: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(10):

            async def query(gh: GitHub[Any], after: str | None = after) -> Any:
                variables = {"owner": owner, "name": name, "number": number, "after": after}
                return await gh.async_graphql(_THREADS, variables)

            data = await self.client.call(inst, repo, query, permissions=READ)
            page = data["repository"]["pullRequest"]["reviewThreads"]
            for node in page["nodes"]:
                first = (node.get("comments") or {}).get("nodes") or [{}]
                threads.append(
                    {
                        "id": node["id"],
                        "resolved": bool(node.get("isResolved")),
                        "comment_id": first[0].get("databaseId"),
                    }
                )
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        return threads

    async def resolve_thread(self, inst: int, repo: str, thread_id: str) -> None:
        """Resolve a review thread (GraphQL ``resolveReviewThread``)."""

        async def mutate(gh: GitHub[Any]) -> Any:
            return await gh.async_graphql(_RESOLVE, {"thread": thread_id})

        await self.client.call(inst, repo, mutate, permissions=REPORT, write=True)

    # -- CI results -----------------------------------------------------------------------------

    async def suite_runs(self, inst: int, repo: str, suite_id: int) -> list[dict[str, Any]]:
        """The check runs of a check suite (the latest of each, first 100)."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.checks.async_list_for_suite(
                owner, name, suite_id, filter_="latest", per_page=100
            )

        data = (await self.client.call(inst, repo, get, permissions=CI_READ)).json()
        return cast(list[dict[str, Any]], data.get("check_runs", []))

    async def annotations(self, inst: int, repo: str, check_run_id: int) -> list[dict[str, Any]]:
        """A check run's annotations (the first 50)."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.checks.async_list_annotations(owner, name, check_run_id, per_page=50)

        return cast(
            list[dict[str, Any]], (await self.client.call(inst, repo, get, permissions=CI_READ)).json()
        )

    async def run_jobs(self, inst: int, repo: str, run_id: int) -> list[dict[str, Any]]:
        """The jobs of a workflow run's latest attempt, with their steps (first 100)."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.actions.async_list_jobs_for_workflow_run(
                owner, name, run_id, filter_="latest", per_page=100
            )

        data = (await self.client.call(inst, repo, get, permissions=CI_READ)).json()
        return cast(list[dict[str, Any]], data.get("jobs", []))

    async def job_log(self, inst: int, repo: str, job_id: int, max_bytes: int) -> str:
        """The tail-capped plain-text log of one job (see the module docstring)."""
        owner, name = _split(repo)

        async def get(gh: GitHub[Any]) -> Any:
            return await gh.rest.actions.async_download_job_logs_for_workflow_run(owner, name, job_id)

        response = await self.client.call(inst, repo, get, permissions=CI_READ, follow_redirects=False)
        raw: httpx.Response = response.raw_response
        if raw.status_code not in (301, 302, 303, 307, 308):
            return raw.text[-max_bytes:]
        location = raw.headers.get("location", "")
        if not location.startswith(("https://", "http://")):
            raise GitHubRejected(f"job {job_id}: no log download address", raw.status_code)
        return await _download_tail(location, max_bytes)


async def _download_tail(url: str, max_bytes: int) -> str:
    """The last ``max_bytes`` of ``url`` (no credentials sent; the failure is at a log's end)."""
    kept = bytearray()
    try:
        async with (
            httpx.AsyncClient(timeout=20.0, follow_redirects=True) as http,
            http.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise GitHubRejected(f"log download answered {response.status_code}", response.status_code)
            read = 0
            async for chunk in response.aiter_bytes():
                kept.extend(chunk)
                read += len(chunk)
                if len(kept) > 2 * max_bytes:
                    del kept[: len(kept) - max_bytes]
                if read > MAX_LOG_READ:
                    break
    except httpx.HTTPError as exc:
        raise GitHubUnavailable(f"cannot download the job log: {exc!r}") from exc
    return bytes(kept[-max_bytes:]).decode("utf-8", "replace")
