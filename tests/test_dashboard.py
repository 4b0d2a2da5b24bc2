"""The dashboard over real HTTP: who sees which task, sign-in, sessions and CSRF, and the pieces.

The app runs on a loopback port with a real database and Redis; GitHub is the fake in
``tests/fakes/github_oauth.py``, a real HTTP server that records what it was asked.
"""

from __future__ import annotations

import itertools
import logging
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from core.links import TaskLinks
from core.models import Run, RunEvent, Task
from core.settings import Settings
from tests.fakes.github_oauth import FakeGitHub
from tests.support.dashboard import github_sign_in, serve
from tests.support.env import git
from web.dashboard import charts
from web.dashboard.diff import branch_diff
from web.dashboard.events import view
from web.dashboard.github import RepoAccess, TokenRejected
from web.dashboard.queries import RunRow

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
LOCAL_TOKEN = "local-admin-token-0123456789"


def csrf_of(html: str) -> str:
    """The CSRF token a page embeds in its forms."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


# ---------------------------------------------------------------- the permission filter


async def test_repo_access_asks_github_once_per_repo_and_caches() -> None:
    now = [1000.0]
    async with FakeGitHub(repos={"octo/demo": "write", "octo/docs": "read"}) as gh:
        gh.tokens["tok"] = "octocat"
        access = RepoAccess(gh.url, ttl_s=300, clock=lambda: now[0])
        repos = ["octo/demo", "octo/docs", "octo/secret", "/srv/repos/app", "https://git.example/x.git"]
        first = await access.check("octocat", "tok", repos)
        assert (first["octo/demo"].read, first["octo/demo"].write) == (True, True)
        assert (first["octo/docs"].read, first["octo/docs"].write) == (True, False)
        assert not first["octo/secret"].read
        # Local paths and URLs are never asked about: only the local admin sees them.
        assert not first["/srv/repos/app"].read and not first["https://git.example/x.git"].read
        asked = gh.calls("/repos/")
        assert sorted(c.path for c in asked) == ["/repos/octo/demo", "/repos/octo/docs", "/repos/octo/secret"]
        assert {c.authorization for c in asked} == {"Bearer tok"}

        await access.check("octocat", "tok", repos)
        assert len(gh.calls("/repos/")) == 3, "answers are cached"
        now[0] += 301
        await access.check("octocat", "tok", ["octo/demo"])
        assert len(gh.calls("/repos/")) == 4, "and asked again once stale"

        with pytest.raises(TokenRejected):
            await access.check("someone", "revoked", ["octo/demo"])


@pytest.mark.parametrize(
    "repo", ["..", "octo/..", "octo", "octo/demo/extra", "-/x", "a b/c"], ids=lambda r: repr(r)
)
async def test_repo_access_never_asks_about_odd_names(repo: str) -> None:
    async with FakeGitHub() as gh:
        result = await RepoAccess(gh.url).check("octocat", "tok", [repo])
    assert not result[repo].read
    assert gh.requests == []


async def test_github_user_sees_only_tasks_of_readable_repositories(
    settings: Settings, tmp_path: Path
) -> None:
    async with FakeGitHub(repos={"octo/demo": "read"}) as gh, serve(settings, gh) as site:
        demo = await site.task("octo/demo", "readable work")
        secret = await site.task("octo/secret", "private work")
        local = await site.task(str(tmp_path), "local work")
        async with httpx.AsyncClient(base_url=site.url) as client:
            await github_sign_in(client)
            page = (await client.get("/tasks")).text
            assert demo.id in page and "readable work" in page
            assert secret.id not in page and local.id not in page
            assert "octo/secret" not in page, "not even in the repository filter"
            repo_calls = len(gh.calls("/repos/"))
            for task_id in (secret.id, local.id, "t_doesnotexist"):
                response = await client.get(f"/tasks/{task_id}")
                assert response.status_code == 404
                assert "No such task." in response.text
            assert (await client.get(f"/tasks/{demo.id}")).status_code == 200
            assert (await client.get(f"/tasks/{secret.id}/live")).status_code == 404
            overview = await client.get("/overview")
            assert overview.status_code == 200
            # Every answer came from the cache after the first page.
            assert len(gh.calls("/repos/")) == repo_calls
            # Reading is not writing: no Cancel button, and the POST is refused.
            assert "cancel-button" not in (await client.get(f"/tasks/{demo.id}")).text
            refused = await client.post(f"/tasks/{demo.id}/cancel", data={"csrf_token": csrf_of(page)})
            assert refused.status_code == 403
        async with httpx.AsyncClient(base_url=site.url) as admin:
            await admin.get(f"/login?token={site.app.state.dashboard.local_token}")
            page = (await admin.get("/tasks")).text
            assert all(t.id in page for t in (demo, secret, local))


@SQLITE
async def test_signed_out_visitors_are_sent_to_sign_in(settings: Settings) -> None:
    async with serve(settings) as site, httpx.AsyncClient(base_url=site.url) as client:
        task = await site.task("octo/demo")
        for path in ("/tasks", "/overview", f"/tasks/{task.id}", "/runs/r_x"):
            response = await client.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/login?next=")
        assert (await client.get(f"/tasks/{task.id}/live")).status_code == 401
        login = await client.get("/login")
        assert login.status_code == 200
        assert "Sign in with GitHub" not in login.text, "GitHub sign-in is not configured here"


# ---------------------------------------------------------------- sign-in and sessions


@SQLITE
async def test_local_token_is_generated_logged_and_signs_in(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="web.dashboard.state"):
        async with serve(settings) as site, httpx.AsyncClient(base_url=site.url) as client:
            token = site.app.state.dashboard.local_token
            assert len(token) >= 24
            assert f"{site.url}/login?token={token}" in caplog.text
            bad = await client.get("/login?token=wrong")
            assert bad.status_code == 401 and "not valid" in bad.text
            good = await client.get(f"/login?token={token}&next=/overview")
            assert good.status_code == 303
            assert good.headers["location"] == "/overview", "the token leaves the address bar"
            assert (await client.get("/overview")).status_code == 200
            # Sign out needs the CSRF token too; then the pages want a sign-in again.
            csrf = csrf_of((await client.get("/overview")).text)
            assert (await client.post("/logout")).status_code == 403
            assert (await client.post("/logout", data={"csrf_token": csrf})).status_code == 303
            assert (await client.get("/overview")).status_code == 303


@SQLITE
async def test_token_form_needs_csrf_and_rejects_open_redirects(settings: Settings) -> None:
    async with (
        serve(settings, handoff_api_token=SecretStr(LOCAL_TOKEN)) as site,
        httpx.AsyncClient(base_url=site.url) as client,
    ):
        assert site.app.state.dashboard.local_token == LOCAL_TOKEN
        csrf = csrf_of((await client.get("/login")).text)
        assert (await client.post("/login", data={"token": LOCAL_TOKEN})).status_code == 403
        wrong = await client.post("/login", data={"token": "nope", "csrf_token": csrf})
        assert wrong.status_code == 401
        ok = await client.post(
            "/login", data={"token": LOCAL_TOKEN, "csrf_token": csrf, "next": "//evil.example/x"}
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/tasks"


@SQLITE
async def test_oauth_callback_with_forged_state_is_refused(settings: Settings) -> None:
    async with (
        FakeGitHub() as gh,
        serve(settings, gh) as site,
        httpx.AsyncClient(base_url=site.url) as client,
    ):
        start = await client.get("/login/github")
        assert start.status_code == 303 and start.headers["location"].startswith(
            f"{gh.url}/login/oauth/authorize?"
        )
        forged = await client.get("/login/github/callback", params={"code": "abc", "state": "guessed"})
        assert forged.status_code == 403
        assert gh.calls("/login/oauth/access_token") == [], "a forged callback's code is never exchanged"
        # The real flow still works, and its redirect_uri is the public URL's callback.
        await github_sign_in(client)
        authorize = gh.calls("/login/oauth/authorize")[-1]
        assert authorize.query["redirect_uri"] == f"{site.url}/login/github/callback"
        exchange = gh.calls("/login/oauth/access_token")[-1]
        assert exchange.form["client_secret"] == gh.client_secret
        assert exchange.form["redirect_uri"] == f"{site.url}/login/github/callback"


@SQLITE
@pytest.mark.parametrize(
    ("public_url", "secure"),
    [("http://127.0.0.1", False), ("https://handoff.example", True)],
    ids=["http", "https"],
)
async def test_session_cookie_flags(settings: Settings, public_url: str, secure: bool) -> None:
    async with (
        serve(settings, handoff_public_url=public_url) as site,
        httpx.AsyncClient(base_url=site.url) as client,
    ):
        cookie = (await client.get("/login")).headers["set-cookie"]
    assert cookie.startswith("handoff_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert ("Secure" in cookie) is secure


@SQLITE
async def test_tampered_session_cookie_is_ignored(settings: Settings) -> None:
    async with serve(settings) as site, httpx.AsyncClient(base_url=site.url) as client:
        await client.get(f"/login?token={site.app.state.dashboard.local_token}")
        assert (await client.get("/tasks")).status_code == 200
        value = client.cookies["handoff_session"]
        client.cookies.clear()
        client.cookies.set("handoff_session", value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"))
        assert (await client.get("/tasks")).status_code == 303


# ---------------------------------------------------------------- CSRF on the buttons


@SQLITE
@pytest.mark.parametrize(
    ("how", "status"),
    [
        ("none", 403),
        ("wrong-field", 403),
        ("wrong-header", 403),
        ("other-session", 403),
        ("field", 303),
        ("header", 200),
    ],
    ids=lambda v: str(v),
)
async def test_every_post_needs_the_session_csrf_token(settings: Settings, how: str, status: int) -> None:
    async with serve(settings) as site, httpx.AsyncClient(base_url=site.url) as client:
        task = await site.task("octo/demo")
        await client.get(f"/login?token={site.app.state.dashboard.local_token}")
        csrf = csrf_of((await client.get(f"/tasks/{task.id}")).text)
        async with httpx.AsyncClient(base_url=site.url) as other:
            other_csrf = csrf_of((await other.get("/login")).text)
        data: dict[str, str] = {}
        headers: dict[str, str] = {}
        if how == "wrong-field":
            data["csrf_token"] = "x" + csrf
        elif how == "wrong-header":
            headers["X-CSRF-Token"] = csrf[:-1]
        elif how == "other-session":
            data["csrf_token"] = other_csrf
        elif how == "field":
            data["csrf_token"] = csrf
        elif how == "header":
            headers |= {"X-CSRF-Token": csrf, "HX-Request": "true"}
        response = await client.post(f"/tasks/{task.id}/cancel", data=data, headers=headers)
        assert response.status_code == status, response.text
        state = (await site.app.state.services.tasks.get(task.id)).state
        assert state == ("queued" if status == 403 else "cancelled")
        if how == "header":
            assert 'id="task-status"' in response.text and "cancelled" in response.text
        if status == 403:
            assert "did not come from this site" in response.text


@SQLITE
async def test_cancel_and_retry_buttons_work_with_and_without_htmx(settings: Settings) -> None:
    async with serve(settings) as site, httpx.AsyncClient(base_url=site.url) as client:
        task = await site.task("octo/demo")
        await client.get(f"/login?token={site.app.state.dashboard.local_token}")
        page = (await client.get(f"/tasks/{task.id}")).text
        assert 'id="cancel-button"' in page and 'id="retry-button"' not in page
        csrf = csrf_of(page)
        cancelled = await client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": csrf})
        assert (
            cancelled.status_code == 303
            and cancelled.headers["location"] == f"/tasks/{task.id}?notice=cancelling"
        )
        again = await client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": csrf})
        assert again.headers["location"] == f"/tasks/{task.id}?notice=cancel-refused"
        assert "already ended" in (await client.get(again.headers["location"])).text
        retried = await client.post(
            f"/tasks/{task.id}/retry", headers={"X-CSRF-Token": csrf, "HX-Request": "true"}
        )
        assert retried.status_code == 204 and retried.headers["hx-redirect"] == f"/tasks/{task.id}"
        fresh = await site.app.state.services.tasks.get(task.id)
        assert fresh.state == "queued"
        audit = await client.get(f"/tasks/{task.id}")
        assert 'id="cancel-button"' in audit.text
        # Anonymous POSTs are refused for their missing token before anything else.
        async with httpx.AsyncClient(base_url=site.url) as anonymous:
            assert (await anonymous.post(f"/tasks/{task.id}/retry")).status_code == 403


# ---------------------------------------------------------------- nothing secret on a page


@SQLITE
async def test_pages_never_show_secrets_and_escape_agent_output(settings: Settings) -> None:
    secrets_ = {"api": "api-token-never-shown-42", "session": "session-secret-never-shown-42"}
    async with (
        FakeGitHub() as gh,
        serve(
            settings,
            gh,
            handoff_api_token=SecretStr(secrets_["api"]),
            handoff_session_secret=SecretStr(secrets_["session"]),
        ) as site,
        httpx.AsyncClient(base_url=site.url) as client,
    ):
        task = await site.task(
            "octo/demo", "print <b>bold</b>", links=TaskLinks(issue_url="javascript:alert(1)")
        )
        services = site.app.state.services
        async with services.sessions.begin() as session:
            fresh = await session.get(Task, task.id)
            await services.journal.append_event(
                session, fresh, None, "log", {"text": "<script>alert('x')</script>"}
            )
        await github_sign_in(client)
        user_token = next(iter(gh.tokens))
        pages = [await client.get(p) for p in ("/tasks", f"/tasks/{task.id}", "/overview", "/login")]
        pages.append(await client.get("/tasks/t_missing"))
        for page in pages:
            for secret in (*secrets_.values(), gh.client_secret, user_token):
                assert secret not in page.text, f"{page.url} shows a secret"
            assert page.headers["x-frame-options"] == "DENY"
            assert "default-src 'self'" in page.headers["content-security-policy"]
        task_page = pages[1].text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in task_page
        assert "<script>alert" not in task_page and "<b>bold</b>" not in task_page
        assert "javascript:" not in task_page, "only http(s) links are shown"


# ---------------------------------------------------------------- the pieces


def _event(type_: str, data: dict[str, Any]) -> RunEvent:
    return RunEvent(task_id="t_1", run_id="r_1", seq=7, type=type_, data=data, ts=datetime.now(UTC))


@pytest.mark.parametrize(
    ("type_", "data", "text", "folded"),
    [
        ("log", {"text": "plain"}, "plain", False),
        ("log", {"text": "\n".join(f"l{i}" for i in range(20))}, "l0 … (20 lines)", True),
        ("tool", {"name": "bash", "input": {"cmd": "ls"}, "output": "a\nb"}, 'bash {"cmd": "ls"}', True),
        ("progress", {"step": "checkout", "repo": "x"}, "checkout · repo=x", False),
        ("status", {"state": "timed_out", "reason": "deadline"}, "timed out — deadline", False),
        ("error", {"message": "boom"}, "boom", False),
    ],
    ids=["log", "long-log", "tool", "progress", "status", "error"],
)
def test_event_views(type_: str, data: dict[str, Any], text: str, folded: bool) -> None:
    result = view(_event(type_, data))
    assert result is not None
    assert result.text == text
    assert (result.body is not None) is folded
    if type_ == "tool":
        assert result.body is not None and '"cmd": "ls"' in result.body and "→ a\nb" in result.body


def test_heartbeats_are_not_shown() -> None:
    assert view(_event("heartbeat", {})) is None


async def test_branch_diff_of_a_local_repository(bare_repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    git("clone", str(bare_repo), str(work))
    git("checkout", "-b", "handoff/t_1", cwd=work)
    (work / "app.sh").write_text("echo hello\necho changed\n")
    (work / "NEW.md").write_text("new\n")
    git("add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-m", "change", cwd=work)
    git("push", "origin", "handoff/t_1", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work)
    run = Run(task_id="t_1", branch="handoff/t_1", head_sha=sha, outcome="succeeded")

    task = Task(id="t_1", repo="octo/demo", instructions="x", links={"clone_url": str(bare_repo)})
    diff = await branch_diff(task, run, "https://github.com")
    assert diff.unavailable is None
    assert sorted(f.name for f in diff.files) == ["NEW.md", "app.sh"]
    assert (diff.additions, diff.deletions) == (2, 0)
    assert ("add", "+echo changed") in next(f for f in diff.files if f.name == "app.sh").lines
    assert diff.compare_url == "https://github.com/octo/demo/compare/handoff/t_1"

    remote = Task(id="t_1", repo="octo/demo", instructions="x")
    far = await branch_diff(remote, run, "https://github.com")
    assert far.unavailable and "not on this host" in far.unavailable and far.compare_url
    hostile = Run(task_id="t_1", branch="--output=/tmp/x", outcome="succeeded")
    assert (await branch_diff(task, hostile, "https://github.com")).unavailable


def test_charts_stack_runs_by_day_and_rank_cost() -> None:
    today = date(2025, 3, 14)
    at = datetime(2025, 3, 14, 10, tzinfo=UTC)

    def row(repo: str, outcome: str, days_ago: int, seconds: float, cost: float) -> RunRow:
        start = at - timedelta(days=days_ago)
        return RunRow(repo, outcome, start, start + timedelta(seconds=seconds), cost)

    rows = [
        row("octo/a", "succeeded", 0, 10, 0.5),
        row("octo/a", "failed", 0, 30, 0.25),
        row("octo/b", "succeeded", 1, 20, 1.0),
    ]
    per_day = charts.runs_per_day(rows, today, days=7)
    assert sorted(r.css for r in per_day.rects) == ["o-failed", "o-succeeded", "o-succeeded"]
    assert any(r.title == "Mar 14: 1 failed" for r in per_day.rects)
    median, line = charts.median_duration(rows, today, days=7)
    assert median == 20 and len(line.dots) == 2
    cost = charts.cost_per_repo(rows)
    assert [label.text for label in cost.labels if label.css == "repo"] == ["octo/b", "octo/a"]
    assert charts.runs_per_day([], today).empty


def test_phone_charts_keep_labels_inside_and_apart() -> None:
    today = date(2025, 3, 14)
    start = datetime(2025, 3, 14, 10, tzinfo=UTC)
    rows = [RunRow("octo/a-rather-long-repository-name", "succeeded", start, start, 0.5)]
    for days in (7, 14, 30):
        for chart in (
            charts.runs_per_day(rows, today, days, width=charts.PHONE_WIDTH),
            charts.median_duration(rows, today, days, width=charts.PHONE_WIDTH)[1],
        ):
            dates = sorted(label.x for label in chart.labels if label.y > chart.height - 10)
            assert all(b - a >= 55 for a, b in itertools.pairwise(dates)), (days, dates)
            assert all(x <= chart.width for x in dates)
    names = [
        label.text
        for label in charts.cost_per_repo(rows, width=charts.PHONE_WIDTH).labels
        if label.css == "repo"
    ]
    assert names == ["…epository-name"] and len(names[0]) == 15


@SQLITE
async def test_tasks_page_counts_queued_tasks_and_says_why_a_task_failed(
    settings: Settings, bare_repo: Path
) -> None:
    from tests.support.env import running_worker
    from tests.support.waiting import wait_until

    async with serve(settings) as site, httpx.AsyncClient(base_url=site.url) as client:
        await client.get(f"/login?token={site.app.state.dashboard.local_token}")
        async with running_worker(settings):
            failed = await site.task(str(bare_repo), "echo boom; exit 3")

            async def ended() -> bool:
                task: Task = await site.app.state.services.tasks.get(failed.id)
                return task.state in {"succeeded", "failed", "cancelled", "timed_out", "budget_exceeded"}

            await wait_until(ended, timeout=180)  # generous: the machine may be busy
        ended_task = await site.app.state.services.tasks.get(failed.id)
        reason = ended_task.state_reason
        assert ended_task.state == "failed" and reason
        # Two tasks wait for a worker; the arq queue holds a third, unrelated job as well.
        for i in range(2):
            await site.task(str(bare_repo), f"echo {i}")
        pool = await site.app.state.services.queue.pool()
        await pool.enqueue_job("some_integration_job", _queue_name=settings.handoff_queue_name)
        assert await site.app.state.services.queue.depth() >= 3  # what the page used to show
        page = (await client.get("/tasks")).text
    queued = re.search(r'id="count-queued"><span class="stat-n">(\d+)<', page)
    assert queued is not None and queued.group(1) == "2"
    row = page[page.index(failed.id) :].split("</tr>")[0]
    assert f'<span class="reason small">{reason}</span>' in row
