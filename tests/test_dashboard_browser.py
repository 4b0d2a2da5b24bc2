"""The dashboard in a real browser (headless Debian Chromium driven by Playwright), against a real
worker running real Docker sandboxes, with sign-in through the fake GitHub OAuth endpoints.

Screenshots of the three pages go to ``test-artifacts/``; with ``HANDOFF_UPDATE_SCREENSHOTS=1`` (or
when it is missing) the run page is also written to ``docs/screenshots/run-page.png`` for the README.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from core.links import TaskLinks
from core.models import TaskSource
from core.settings import Settings
from tests.fakes.github_oauth import FakeGitHub
from tests.support.dashboard import Site, serve
from tests.support.env import running_worker

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SHOT = ROOT / "docs" / "screenshots" / "run-page.png"
CHROMIUM = os.environ.get("HANDOFF_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# One run that looks like an agent at work: usage, folded tool calls, a message, a diff.
DEMO = r"""# Greet people by name in app.sh and document it
emit() { printf '%s\n' "$1"; }
emit '{"type": "progress", "data": {"step": "planning", "usage": {"input_tokens": 5200, "output_tokens": 610, "cost_usd": 0.0248}}}'
emit '{"type": "tool", "data": {"name": "read_file", "input": {"path": "app.sh"}, "output": "echo hello"}}'
echo 'app.sh greets, but always the same way; it should take a name.'
emit '{"type": "tool", "data": {"name": "edit_file", "input": {"path": "app.sh", "new": "echo \"hello, ${1:-world}\""}, "output": "ok"}}'
printf 'echo "hello, ${1:-world}"\n' > app.sh
emit '{"type": "tool", "data": {"name": "run", "input": {"cmd": "sh app.sh Ada"}, "output": "hello, Ada"}}'
sh app.sh Ada
printf '# demo\n\nRun `sh app.sh NAME` to be greeted by name.\n' > README.md
emit '{"type": "message", "data": {"text": "app.sh takes an optional name now, and the README says how."}}'
emit '{"type": "result", "data": {"summary": "Greet by name in app.sh", "usage": {"input_tokens": 1800, "output_tokens": 240, "cost_usd": 0.0091}}}'
"""
LIVE = """# Stream twenty lines, slowly
echo '{"type": "progress", "data": {"step": "streaming", "usage": {"input_tokens": 900, "output_tokens": 120, "cost_usd": 0.004}}}'
for i in $(seq 1 20); do echo line-$i; sleep 0.3; done
"""

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

# Elements sticking out of the viewport (the page would scroll sideways, or be cut off).
OVERFLOWING = """() => {
  const wide = document.documentElement.scrollWidth > window.innerWidth ? ['document'] : [];
  const parts = [...document.querySelectorAll(
    '.filters, .filters label, .filters input, .filters select, .filter-actions, .stats, .stat,'
    + ' .cards .card, .segmented, .panel, .chart-box, svg.chart, .legend')];
  return wide.concat(parts.filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && (r.right > window.innerWidth + 0.5 || r.left < -0.5);
  }).map(e => (e.getAttribute('class') || e.tagName) + ' ' + Math.round(e.getBoundingClientRect().right)));
}"""
# The smallest rendered font size of a chart label, in CSS pixels.
SMALLEST_CHART_TEXT = """() => Math.min(...[...document.querySelectorAll('svg.chart text')]
  .map(t => t.getBoundingClientRect().height).filter(h => h > 0))"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium (never a downloaded browser build)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def wait_state(site: Site, task_id: str, states: set[str], timeout: float = 40.0) -> Any:
    """Poll the task service until the task is in one of ``states``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = await site.app.state.services.tasks.get(task_id)
        if task.state in states:
            return task
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} stuck in {task.state} ({task.state_reason}); wanted {states}")


async def log_lines(page: Page) -> int:
    """How many ``line-N`` lines the page's event log shows."""
    count: int = await page.evaluate(
        "() => [...document.querySelectorAll('#event-log .ev-log')]"
        ".filter(e => /line-\\d+/.test(e.textContent)).length"
    )
    return count


async def shoot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under ``test-artifacts/``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path


async def test_sign_in_watch_a_live_run_cancel_it_and_see_only_readable_tasks(
    settings: Settings, bare_repo: Path, browser: Browser
) -> None:
    async with (
        FakeGitHub(repos={"octo/demo": "write"}) as gh,
        serve(settings, gh) as site,
        running_worker(settings),
    ):
        common: dict[str, Any] = {
            "links": TaskLinks(clone_url=str(bare_repo), issue_url="https://github.com/octo/demo/issues/12"),
            "requester": "octocat",
            "source": TaskSource.github_issue,
        }
        demo = await site.task("octo/demo", DEMO, **common)
        hidden = await site.task("octo/secret", "not for octocat", needs_approval=True)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(15_000)

        # Sign in: the dashboard sends us to GitHub (the fake), which sends us back signed in.
        await page.goto(f"{site.url}/tasks")
        assert "/login" in page.url
        await shoot(page, "login.png")
        await page.click("text=Sign in with GitHub")
        await page.wait_for_url(f"{site.url}/tasks")
        assert await page.inner_text(".who-name") == "octocat"
        assert gh.calls("/login/oauth/access_token") and gh.calls("/user")
        await wait_state(site, demo.id, {"succeeded"})

        # A live run: new lines appear on the open page, without a reload.
        live = await site.task("octo/demo", LIVE, **common)
        await wait_state(site, live.id, {"running"})
        await page.goto(f"{site.url}/tasks")
        assert live.id in await page.content() and hidden.id not in await page.content()
        await shoot(page, "tasks.png")
        # Filters apply in place (htmx) and the address follows them.
        await page.evaluate("window.__notReloaded = true")
        await page.select_option("select[name=state]", "succeeded")
        await page.wait_for_function(
            f"() => !document.querySelector('#task-table').textContent.includes('{live.id}')"
        )
        assert demo.id in await page.inner_text("#task-table")
        assert "state=succeeded" in page.url and await page.evaluate("window.__notReloaded") is True
        await page.goto(f"{site.url}/tasks/{live.id}")
        await page.evaluate("window.__notReloaded = true")
        await page.wait_for_function("() => document.querySelectorAll('#event-log .ev-log').length > 0")
        seen = await log_lines(page)
        await page.wait_for_function(
            f"() => [...document.querySelectorAll('#event-log .ev-log')]"
            f".filter(e => /line-\\d+/.test(e.textContent)).length >= {seen + 3}"
        )
        assert await page.evaluate("window.__notReloaded") is True
        assert await page.is_visible("#live-indicator")
        await shoot(page, "run-page-live.png")

        # Cancel: the state badge turns to cancelled (pushed over SSE), still without a reload.
        await page.click("#cancel-button")
        await page.wait_for_function(
            "() => document.querySelector('#task-state').textContent.trim() === 'cancelled'", timeout=20_000
        )
        assert await page.evaluate("window.__notReloaded") is True
        assert (await wait_state(site, live.id, {"cancelled"})).state == "cancelled"
        # When the stream ends, the diff section reloads itself (htmx) with the final word.
        await page.wait_for_function(
            "() => document.querySelector('#diff').textContent.includes('No branch')"
        )
        lines_at_cancel = await log_lines(page)
        assert 3 <= lines_at_cancel < 20

        # The finished run of the first task: folded tool calls, usage, and the branch diff.
        await page.goto(f"{site.url}/tasks/{demo.id}")
        assert (await page.inner_text("#task-state")).strip() == "succeeded"
        assert await page.locator(".ev-tool details").count() == 3
        assert not await page.locator(".ev-tool details").first.evaluate("d => d.open")
        assert '+echo "hello, ${1:-world}"' in await page.inner_text("#diff")
        assert "$0.034" in await page.inner_text("#run-metrics")
        run_page = await shoot(page, "run-page.png")
        if os.environ.get("HANDOFF_UPDATE_SCREENSHOTS") == "1" or not DOCS_SHOT.exists():
            DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_page, DOCS_SHOT)

        # The stable link to a run (check runs and Slack link to it) opens its task page.
        run_id = (await site.app.state.services.tasks.runs(demo.id))[0].id
        await page.goto(f"{site.url}/runs/{run_id}")
        assert page.url.endswith(f"/tasks/{demo.id}?run={run_id}")

        # A task of a repository octocat cannot read does not exist, as far as the page says.
        response = await page.goto(f"{site.url}/tasks/{hidden.id}")
        assert response is not None and response.status == 404
        assert "Not found" in await page.inner_text("h1")

        # The overview: charts drawn on the server, and the command help.
        await page.goto(f"{site.url}/overview")
        assert await page.locator("svg.chart:visible").count() == 3
        assert await page.locator("svg.chart rect.o-succeeded").count() >= 1
        assert await page.is_visible("#commands")
        await shoot(page, "overview.png")

        # The same run page on a phone.
        phone = await browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            storage_state=await context.storage_state(),
        )
        phone_page = await phone.new_page()
        await phone_page.goto(f"{site.url}/tasks/{demo.id}")
        width = await phone_page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, "no sideways scrolling on a phone"
        await shoot(phone_page, "run-page-phone.png")
        # The tasks list (its filter form) and the overview (its charts) fit a phone, too.
        for path, shot in (("/tasks", "tasks-phone.png"), ("/overview", "overview-phone.png")):
            await phone_page.goto(f"{site.url}{path}")
            await shoot(phone_page, shot)
            assert await phone_page.evaluate(OVERFLOWING) == [], f"{path} is wider than the phone"
        tiny = await phone_page.evaluate(SMALLEST_CHART_TEXT)
        assert tiny >= 9, f"chart labels render at {tiny:.1f} px on a phone"
        await phone.close()
        await context.close()
