"""The dashboard's Automations page: rules, activity per repository with cost, firings and skips
with their reasons — only for repositories the viewer may read — and the rule on a task's page."""

from __future__ import annotations

import httpx
import pytest
import yaml

from core.automations.ledger import FIRED, SKIPPED, Firing, Ledger
from core.links import AutomationLinks, TaskLinks
from core.models import Run, TaskSource
from core.settings import Settings
from tests.fakes.github_oauth import FakeGitHub
from tests.support.dashboard import github_sign_in, serve

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
RULES = [
    {"name": "review-prs", "events": ["pull_request.opened"], "do": "review"},
    {"name": "nightly", "schedule": "0 3 * * 1-5", "repos": ["octo/demo"], "do": "work", "instructions": "x"},
]


@SQLITE
async def test_automations_page_shows_rules_firings_skips_and_cost(settings: Settings) -> None:
    assert settings.handoff_config is not None
    config = yaml.safe_load(settings.handoff_config.read_text())
    settings.handoff_config.write_text(yaml.safe_dump({**config, "automations": RULES}))
    async with FakeGitHub(repos={"octo/demo": "read"}) as gh, serve(settings, gh) as site:
        links = TaskLinks(
            automation=AutomationLinks(rule="review-prs", mode="review", event="pull_request.opened")
        )
        task = await site.task("octo/demo", "Review #7", source=TaskSource.github_automation, links=links)
        services = site.app.state.services
        async with services.sessions.begin() as session:
            session.add(Run(task_id=task.id, cost_usd=0.42))
        ledger = Ledger(services.sessions)
        await ledger.claim(
            Firing("review-prs", "octo/demo", "pull_request.opened", FIRED, dedupe_key="k1", task_id=task.id)
        )
        await ledger.skip(
            Firing(
                "review-prs",
                "octo/demo",
                "pull_request.opened",
                SKIPPED,
                "label <script>x</script> is present",
            )
        )
        await ledger.skip(
            Firing("review-prs", "octo/secret", "pull_request.opened", SKIPPED, "secret-reason")
        )
        async with httpx.AsyncClient(base_url=site.url) as client:
            await github_sign_in(client)
            page = await client.get("/automations")
            assert page.status_code == 200
            html = page.text
            assert "review-prs" in html and "nightly" in html and "<code>0 3 * * 1-5</code>" in html
            assert task.id in html and "$0.42" in html
            assert "label &lt;script&gt;x&lt;/script&gt; is present" in html and "<script>x" not in html
            # Another repository's decisions stay hidden from a viewer who cannot read it.
            assert "octo/secret" not in html and "secret-reason" not in html
            skipped = (await client.get("/automations?decision=skipped&rule=review-prs")).text
            assert (
                "is present" in skipped
                and f'href="/tasks/{task.id}"' not in skipped.split('id="decisions"')[1]
            )
            # The task's page names its rule.
            task_page = (await client.get(f"/tasks/{task.id}")).text
            assert (
                'rule <a href="/automations?rule=review-prs">review-prs</a> (review, pull_request.opened)'
                in task_page
            )
