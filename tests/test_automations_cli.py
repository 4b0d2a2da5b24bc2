"""``handoff automations test | list``, run as real processes on recorded payloads and a real database."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from core.automations.ledger import FIRED, SKIPPED, Firing, Ledger
from core.db import make_engine, make_sessions
from core.models import Run, Task
from tests.support.cli import handoff
from tests.support.github import example

SERVER = {
    "profiles": {
        "shell": {"image": "handoff-sandbox:minimal"},
        "reviewer": {"image": "handoff-sandbox:minimal"},
    },
    "github": {"allowed_overrides": ["agent", "automations"], "max_budget": {"max_cost_usd": 1}},
    "automations": [
        {
            "name": "review-prs",
            "events": ["pull_request.opened", "pull_request.synchronize"],
            "if": {"draft": False, "author_permission": "write", "labels_absent": ["no-review"]},
            "do": "review",
            "agent": "reviewer",
        },
        {
            "name": "fix-ci",
            "events": ["check_suite.completed"],
            "if": {"conclusion": "failure", "branch": "handoff/*"},
            "do": "fix-ci",
        },
        {
            "name": "nightly-deps",
            "schedule": "0 3 * * 1-5",
            "repos": ["acme/api"],
            "do": "work",
            "instructions": "Update dependencies whose patch versions changed; run the tests.",
        },
    ],
}
REPO_RULES = {
    "automations": [
        {
            "name": "docs",
            "events": ["pull_request.opened"],
            "do": "work",
            "instructions": "Check the docs of {title}",
        },
        {"name": "rich", "events": ["pull_request.opened"], "do": "review", "budget": {"max_cost_usd": 9}},
    ]
}


def _files(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "handoff.yml"
    config.write_text(yaml.safe_dump(SERVER))
    return {"HANDOFF_CONFIG": str(config), "DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}"}


async def test_automations_test_says_which_rules_fire_and_with_what(tmp_path: Path) -> None:
    env = _files(tmp_path)
    opened = tmp_path / "pull_request.opened.json"
    opened.write_text(json.dumps(example("pull_request", "opened")))
    repo_config = tmp_path / "repo.yml"
    repo_config.write_text(yaml.safe_dump(REPO_RULES))
    code, out = await handoff("automations", "test", str(opened), "--repo-config", str(repo_config), env=env)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "pull_request.opened on Codertocat/Hello-World (sender Codertocat)"
    assert (
        "refused repository rule rich: its budget is above this server's bounds (max_cost_usd 9 > 1)" in out
    )
    assert "✔ review-prs (server, do: review): fires" in out
    assert "not checked offline: the role of Codertocat (author_permission: write)" in out
    assert "dedupe key: review-prs:Codertocat/Hello-World:ec26c3e57ca3a959ca5aad62de7213c562f8c821" in out
    assert '│ Review pull request #2 (<untrusted-data source="title">' in out
    assert "✔ docs (repo, do: work): fires" in out and "fix-ci" not in out
    # A check suite: the fix-ci rule listens, and skips a success with the reason.
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(example("check_suite", "completed")))
    code, out = await handoff("automations", "test", str(suite), env=env)
    assert code == 0 and "✘ fix-ci (server, do: fix-ci): skipped — conclusion is success, not failure" in out
    # What cannot be read is one line and exit 2.
    (tmp_path / "x.json").write_text("{not json")
    code, out = await handoff("automations", "test", str(tmp_path / "x.json"), "--event", "push", env=env)
    assert code == 2 and len(out.strip().splitlines()) == 1
    code, out = await handoff("automations", "test", str(suite), "--event", "ping", env=env)
    assert code == 2 and "automations do not read this payload as `ping`" in out


async def test_automations_list_shows_rules_per_repository_with_their_last_firing(tmp_path: Path) -> None:
    env = _files(tmp_path)
    code, out = await handoff("db", "upgrade", env=env)
    assert code == 0, out
    engine = make_engine(env["DATABASE_URL"])
    try:
        sessions = make_sessions(engine)
        async with sessions.begin() as session:
            session.add(Task(id="t_review1", repo="acme/web", instructions="review"))
            await session.flush()
            session.add(Run(task_id="t_review1", cost_usd=0.25))
        ledger = Ledger(sessions)
        await ledger.claim(
            Firing(
                "review-prs", "acme/web", "pull_request.opened", FIRED, dedupe_key="k1", task_id="t_review1"
            )
        )
        await ledger.skip(
            Firing("review-prs", "acme/web", "pull_request.synchronize", SKIPPED, "sent by the App itself")
        )
        await ledger.skip(
            Firing("docs", "acme/web", "pull_request.opened", SKIPPED, "label x is missing", "repo")
        )
    finally:
        await engine.dispose()
    code, out = await handoff("automations", "list", env=env)
    assert code == 0, out
    assert "nightly-deps (server): schedule `0 3 * * 1-5` → work on acme/api" in out
    blocks = out.split("\n\n")
    api = next(b for b in blocks if b.startswith("acme/api"))
    assert "nightly-deps (server): never fired" in api and "review-prs (server): never fired" in api
    web = next(b for b in blocks if b.startswith("acme/web"))
    assert "review-prs (server): last " in web and "skipped (sent by the App itself)" in web
    assert "fired 1, skipped 1, $0.25" in web and "docs (repo): last" in web
