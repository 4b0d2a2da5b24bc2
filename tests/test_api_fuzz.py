"""No input gets a 500: schemathesis against the API's own OpenAPI description, on PostgreSQL.

PostgreSQL is the strict backend (it refuses NUL in text; its integers and timestamps have
bounds), so the API runs on it. No worker runs: tasks the fuzzer creates stay queued, and the
fuzzer only ever meets the API. A real task, run and events are seeded so that the operations on
``/api/tasks/{task_id}`` and ``/api/runs/{run_id}/events`` are reached with ids that exist, as well
as with the ids the fuzzer makes up. The number of examples is bounded so the stage stays short.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from core.db import make_engine, make_sessions
from core.journal import Journal
from core.models import Run, Task
from core.settings import Settings, load_settings
from tests.support.env import LiveServer, psql_admin, write_config

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
MAX_EXAMPLES = 100


@pytest.fixture
def postgres_only(postgres_url: str, pg_template: str) -> Iterator[str]:
    name = f"handoff_fuzz_{uuid.uuid4().hex[:10]}"
    psql_admin(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    psql_admin(postgres_url, f'DROP DATABASE "{name}" WITH (FORCE)')


def _settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    return load_settings(
        database_url=database_url,
        redis_url=redis_url,
        handoff_config=write_config(tmp_path / "handoff.yml"),
        handoff_workspace_dir=tmp_path / "workspaces",
        handoff_queue_name=f"handoff:fuzz:{uuid.uuid4().hex[:8]}",
    )


async def _seed(client: httpx.AsyncClient, settings: Settings) -> tuple[str, str]:
    """A task with a run and a few events, as a worker would have left them."""
    task_id = str((await client.post("/api/tasks", json={"repo": "o/r", "instructions": "x"})).json()["id"])
    engine = make_engine(settings.database_url)
    try:
        async with make_sessions(engine).begin() as session:
            task = await session.get(Task, task_id)
            assert task is not None
            run = Run(task_id=task_id, worker_id="fuzz")
            session.add(run)
            await session.flush()
            for n in range(5):
                await Journal().append_event(session, task, run.id, "log", {"text": f"line {n}"})
            return task_id, run.id
    finally:
        await engine.dispose()


async def test_no_input_gets_a_server_error(tmp_path: Path, postgres_only: str, redis_url: str) -> None:
    from web.app import create_app

    settings = _settings(tmp_path, postgres_only, redis_url)
    async with LiveServer(create_app(settings)) as api, httpx.AsyncClient(base_url=api.url) as client:
        task_id, run_id = await _seed(client, settings)
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            "\n".join(
                [
                    f"[dictionaries.tasks]\nvalues = {json.dumps([task_id])}",
                    f"[dictionaries.runs]\nvalues = {json.dumps([run_id])}",
                    "[parameters]",
                    '"path.task_id" = { dictionary = "tasks", probability = 0.5 }',
                    '"path.run_id" = { dictionary = "runs", probability = 0.5 }',
                ]
            )
            + "\n"
        )
        proc = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"{api.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "1",
            cwd=tmp_path,  # its example database (.hypothesis) stays out of the checkout
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
        # The seeded ids were used: the task's own operations answered something other than 404.
        task = (await client.get(f"/api/tasks/{task_id}")).json()
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-6000:]
    assert "Server error" not in report, report[-6000:]
    assert "generated" in report and "passed" in report, report[-3000:]
    assert task["id"] == task_id


# The dashboard is not in the OpenAPI description: its query strings, path parts and headers are
# tried here, each with what broke an API before (NUL, a lone surrogate, numbers and dates past
# what PostgreSQL or ``datetime`` hold, header injection in a redirect target).
NASTY = [
    "/tasks?repo=a%00b",
    "/tasks?requester=%00&state=%00&source=%00",
    "/tasks?repo=%ED%A0%80",
    "/tasks?since=9999-12-31&until=9999-12-31",
    "/tasks?since=0000-00-00&until=%00",
    "/tasks?offset=1180591620717411303424",
    "/tasks/{task}?run=%00",
    "/tasks/{task}?run=r_%00&notice=%00",
    "/tasks/%00",
    "/tasks/t_%ED%A0%80",
    "/tasks/{task}/diff?run=%00",
    "/tasks/%00/diff",
    "/tasks/{task}/live?after=1180591620717411303424",
    "/tasks/{task}/live?run=%00",
    "/runs/%00",
    "/runs/r_%ED%A0%80",
    "/overview?days=1180591620717411303424",
    "/login?next=/x%0D%0ASet-Cookie:%20a=b&token={token}",
    "/login?next=/%00&token={token}",
    "/login?token=%00",
    "/login?token=%ED%A0%80",
    "/login/github?next=/%0D%0Ax",
    "/login/github/callback?code=%00&state=%00",
]


@pytest.mark.parametrize("path", NASTY)
async def test_dashboard_query_strings_get_no_server_error(
    path: str, tmp_path: Path, postgres_only: str, redis_url: str
) -> None:
    from web.app import create_app

    settings = _settings(tmp_path, postgres_only, redis_url)
    app = create_app(settings)
    async with LiveServer(app) as site, httpx.AsyncClient(base_url=site.url) as client:
        token = app.state.dashboard.local_token
        task_id, _run_id = await _seed(client, settings)
        assert (await client.get(f"/login?token={token}")).status_code == 303
        url = path.format(task=task_id, token=token)
        # b"\xb2" reads as "²" (latin-1): str.isdigit() says yes, int() says no.
        headers = {b"Last-Event-ID": b"\xb2"} if "/live" in url else {}
        async with client.stream("GET", url, headers=headers) as response:
            status = response.status_code
    assert status < 500, (url, status)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"repo": "o/r", "instructions": "a\x00b"}, "instructions"),
        ({"repo": "o/\x00r", "instructions": "x"}, "repo"),
        ({"repo": "o/r", "instructions": "x", "base_ref": "ma\x00in"}, "base_ref"),
    ],
    ids=["nul-instructions", "nul-repo", "nul-base-ref"],
)
async def test_text_the_database_cannot_hold_is_refused_naming_the_field(
    body: dict[str, str], field: str, tmp_path: Path, postgres_only: str, redis_url: str
) -> None:
    from web.app import create_app

    settings = _settings(tmp_path, postgres_only, redis_url)
    async with LiveServer(create_app(settings)) as api, httpx.AsyncClient(base_url=api.url) as client:
        refused = await client.post("/api/tasks", json=body)
        # A lone surrogate cannot even be sent as UTF-8: it arrives as a JSON escape.
        raw = json.dumps({**body, field: "a\ud800b"}).encode()
        surrogate = await client.post("/api/tasks", content=raw, headers={"content-type": "application/json"})
        listed = (await client.get("/api/tasks")).json()
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", field]
    assert "NUL" in refused.json()["detail"][0]["msg"]
    assert surrogate.status_code == 422 and surrogate.json()["detail"][0]["loc"] == ["body", field]
    assert listed["total"] == 0  # nothing half-created


async def test_the_task_service_refuses_such_text_from_any_ingress(sqlite_settings: Settings) -> None:
    from core.errors import InvalidInput
    from core.tasks import NewTask
    from jobs.services import build_services

    services = build_services(sqlite_settings)
    try:
        with pytest.raises(InvalidInput) as refused:
            await services.tasks.create(NewTask(repo="o/r", instructions="fix \ud83d it"))
        assert refused.value.field == "instructions"
        with pytest.raises(InvalidInput):
            await services.tasks.follow_up("t_x", "more\x00", actor="someone")
    finally:
        await services.close()
