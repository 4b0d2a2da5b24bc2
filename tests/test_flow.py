"""End to end: REST API → arq → hardened Docker sandbox → git push, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import docker
import httpx
import pytest

from core.settings import Settings
from tests.support.env import LiveServer, git, running_worker
from tests.support.waiting import event_texts, wait_for, wait_until

AGENT = (
    'echo \'{"type": "progress", "data": {"step": "editing"}}\'; '
    "echo plain output line; "
    "echo 'echo changed' >> app.sh; "
    "echo new > NEW.md; "
    'echo \'{"type": "result", "data": {"summary": "edited app.sh"}}\''
)


async def test_task_runs_in_sandbox_streams_events_and_pushes_branch(
    api: LiveServer, settings: Settings, bare_repo: Path
) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client, running_worker(settings):
        created = await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": AGENT})
        assert created.status_code == 201, created.text
        task = created.json()
        assert task["state"] == "queued"
        done = await wait_for(client, task["id"])
        assert done["state"] == "succeeded", done
        assert done["branch"] == f"handoff/{task['id']}"
        assert done["summary"] == "edited app.sh"
        run = done["runs"][0]
        assert run["outcome"] == "succeeded" and run["exit_code"] == 0 and run["container_id"]
        events = (await client.get(f"/api/runs/{run['id']}/events")).json()["items"]
        types = [e["type"] for e in events]
        assert "progress" in types and "result" in types
        assert "plain output line" in event_texts(events)
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    # The branch is really on the remote, with the agent's change; main is untouched.
    assert "echo changed" in git("--git-dir", str(bare_repo), "show", f"handoff/{task['id']}:app.sh")
    assert git("--git-dir", str(bare_repo), "show", "main:app.sh") == "echo hello"
    # The workspace is cleaned up and no container is left behind.
    assert not any((settings.handoff_workspace_dir).glob("*/repo"))
    client_d = docker.DockerClient(version="1.41")
    assert client_d.containers.list(all=True, filters={"label": f"handoff.task={task['id']}"}) == []


async def test_no_changes_still_succeeds(api: LiveServer, settings: Settings, bare_repo: Path) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client, running_worker(settings):
        task = (await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "ls"})).json()
        done = await wait_for(client, task["id"])
    assert done["state"] == "succeeded"
    assert done["summary"] == "no changes"
    assert done["branch"] is None
    assert git("--git-dir", str(bare_repo), "branch", "--list", "handoff/*") == ""


async def test_sse_follows_a_live_run(api: LiveServer, settings: Settings, bare_repo: Path) -> None:
    script = "for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done"
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client, running_worker(settings):
        task = (await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": script})).json()
        running = await wait_for(client, task["id"], {"running", "succeeded"})
        run_id = running["runs"][0]["id"]
        seen: list[tuple[float, str]] = []
        async with client.stream(
            "GET", f"/api/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("event: end"):
                    break
                if line.startswith("data: "):
                    payload = json.loads(line[6:])
                    if payload["type"] == "log":
                        seen.append((time.monotonic(), payload["data"]["text"]))
    texts = [t for _, t in seen]
    assert texts == [f"line-{i}" for i in range(1, 6)]
    # Lines arrived while the run was going, not all at once at the end.
    assert seen[-1][0] - seen[0][0] > 0.6


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "repo"),
        ({"repo": "x"}, "instructions"),
        ({"repo": "   ", "instructions": "x"}, "blank"),
        ({"repo": "x", "instructions": "y", "bogus": 1}, "bogus"),
        ({"repo": "x", "instructions": "y" * 100_001}, "instructions"),
    ],
    ids=["empty", "no-instructions", "blank-repo", "unknown-field", "huge-instructions"],
)
async def test_invalid_bodies_get_422(api: LiveServer, body: dict[str, object], message: str) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        response = await client.post("/api/tasks", json=body)
        assert response.status_code == 422
        assert message in response.text
        assert (await client.get("/api/tasks")).json()["total"] == 0


async def test_unknown_agent_profile_is_404(api: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        response = await client.post("/api/tasks", json={"repo": "x", "instructions": "y", "agent": "nope"})
    assert response.status_code == 404
    assert "unknown agent profile 'nope'" in response.text


@pytest.mark.parametrize(
    ("repo", "reason"),
    [("/nonexistent/repo", "not found"), ("http://127.0.0.1:9/x.git", "")],
    ids=["unknown-path", "unreachable-remote"],
)
async def test_bad_repository_fails_with_reason(
    api: LiveServer, settings: Settings, repo: str, reason: str
) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client, running_worker(settings):
        task = (await client.post("/api/tasks", json={"repo": repo, "instructions": "ls"})).json()
        done = await wait_for(client, task["id"])
        events = (await client.get(f"/api/runs/{done['runs'][0]['id']}/events")).json()["items"]
    assert done["state"] == "failed"
    assert reason in done["state_reason"]
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["data"]["message"] == done["state_reason"]


async def test_redis_down_answers_503_and_creates_nothing(settings: Settings) -> None:
    from web.app import create_app

    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    async with LiveServer(create_app(down)) as server, httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/api/tasks", json={"repo": "x", "instructions": "y"})
        assert response.status_code == 503
        assert "redis" in response.json()["detail"]
        assert response.headers["retry-after"]
        assert (await client.get("/api/tasks")).json() == {"items": [], "total": 0, "offset": 0, "limit": 50}
        health = await client.get("/healthz")
        assert health.status_code == 503
        checks = health.json()["checks"]
        assert checks["redis"]["ok"] is False and checks["database"]["ok"] is True


async def test_docker_down_holds_runs_in_the_queue(
    api: LiveServer, settings: Settings, bare_repo: Path
) -> None:
    no_docker = settings.model_copy(update={"docker_host": "unix:///nonexistent/docker.sock"})
    async with httpx.AsyncClient(base_url=api.url) as client:
        task = (await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "ls"})).json()
        async with running_worker(no_docker) as worker:
            await asyncio.sleep(3)
            held = (await client.get(f"/api/tasks/{task['id']}")).json()
            gate = worker.ctx["handoff"].gate
            assert not gate.runs_open() and gate.intake_open(), gate.down()
    # No attempt is spent on an engine known to be away (tests/test_outages.py: it runs on return).
    assert held["state"] == "queued" and held["runs"] == [], held


async def test_docker_lost_after_intake_fails_sandbox_unavailable_after_retries(
    api: LiveServer, settings: Settings, bare_repo: Path
) -> None:
    no_docker = settings.model_copy(update={"docker_host": "unix:///nonexistent/docker.sock"})
    from jobs.dependencies import DependencyGate
    from jobs.services import build_worker_services

    wc = build_worker_services(no_docker)
    # The engine goes away between the intake's check and the container's start: a gate that has
    # not noticed yet lets the run through, and each try fails "sandbox unavailable".
    wc.gate = DependencyGate({})
    async with httpx.AsyncClient(base_url=api.url) as client:
        task = (await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "ls"})).json()
        async with running_worker(no_docker, ctx={"handoff": wc}):
            done = await wait_for(client, task["id"], timeout=30)
    assert done["state"] == "failed"
    assert "sandbox unavailable" in done["state_reason"]
    # One try per allowed attempt, each recorded; none left running.
    assert [r["outcome"] for r in done["runs"]] == ["requeued", "requeued", "failed"]


async def test_hanging_container_times_out(api: LiveServer, settings: Settings, bare_repo: Path) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client, running_worker(settings):
        body = {"repo": str(bare_repo), "instructions": "sleep 1000", "agent": "short"}
        task = (await client.post("/api/tasks", json=body)).json()
        start = time.monotonic()
        done = await wait_for(client, task["id"], timeout=30)
    assert done["state"] == "timed_out"
    assert "deadline of 3 s" in done["state_reason"]
    assert time.monotonic() - start < 15
    assert (
        docker.DockerClient(version="1.41").containers.list(
            all=True, filters={"label": f"handoff.task={task['id']}"}
        )
        == []
    )


async def test_memory_hog_fails_out_of_memory(api: LiveServer, settings: Settings, bare_repo: Path) -> None:
    hog = "x=a; while true; do x=$x$x; done"
    async with httpx.AsyncClient(base_url=api.url) as client, running_worker(settings):
        task = (
            await client.post(
                "/api/tasks", json={"repo": str(bare_repo), "instructions": hog, "agent": "short"}
            )
        ).json()
        done = await wait_for(client, task["id"], timeout=30)
    assert done["state"] == "failed"
    assert "out of memory" in done["state_reason"]


async def test_cancel_running_kills_container_within_2s(
    api: LiveServer, settings: Settings, bare_repo: Path
) -> None:
    dclient = docker.DockerClient(version="1.41")
    async with httpx.AsyncClient(base_url=api.url) as client, running_worker(settings):
        task = (
            await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "sleep 1000"})
        ).json()
        await wait_for(client, task["id"], {"running"})
        await wait_until(lambda: dclient.containers.list(filters={"label": f"handoff.task={task['id']}"}))
        start = time.monotonic()
        response = await client.post(f"/api/tasks/{task['id']}/cancel")
        assert response.status_code == 200
        await wait_until(
            lambda: not dclient.containers.list(filters={"label": f"handoff.task={task['id']}"}), timeout=5
        )
        assert time.monotonic() - start < 2.0
        done = await wait_for(client, task["id"], timeout=10)
    assert done["state"] == "cancelled"
    again = await httpx.AsyncClient(base_url=api.url).post(f"/api/tasks/{task['id']}/cancel")
    assert again.status_code == 409


async def test_cancel_queued_never_starts(api: LiveServer, settings: Settings, bare_repo: Path) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        task = (
            await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "touch x"})
        ).json()
        cancelled = (await client.post(f"/api/tasks/{task['id']}/cancel")).json()
        assert cancelled["state"] == "cancelled"
        async with running_worker(settings) as worker:
            await wait_until(lambda: worker.jobs_complete + worker.jobs_failed >= 1, timeout=10)
        final = (await client.get(f"/api/tasks/{task['id']}")).json()
    assert final["state"] == "cancelled"
    assert final["runs"] == []


async def test_retry_runs_again(api: LiveServer, settings: Settings, bare_repo: Path) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client, running_worker(settings):
        task = (
            await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "exit 3"})
        ).json()
        first = await wait_for(client, task["id"])
        assert first["state"] == "failed" and "code 3" in first["state_reason"]
        retried = await client.post(f"/api/tasks/{task['id']}/retry")
        assert retried.json()["state"] == "queued"
        await asyncio.sleep(0.1)
        second = await wait_for(client, task["id"])
    assert [r["attempt"] for r in second["runs"]] == [1, 2]
    assert (await httpx.AsyncClient(base_url=api.url).post("/api/tasks/t_missing/retry")).status_code == 404


async def test_list_filters_and_pagination(api: LiveServer, bare_repo: Path) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        ids = []
        for i in range(5):
            r = await client.post(
                "/api/tasks", json={"repo": f"{bare_repo}" if i % 2 else "/other", "instructions": "x"}
            )
            ids.append(r.json()["id"])
        page = (await client.get("/api/tasks", params={"limit": 2, "offset": 1})).json()
        assert page["total"] == 5 and len(page["items"]) == 2
        mine = (await client.get("/api/tasks", params={"repo": str(bare_repo)})).json()
        assert mine["total"] == 2
        assert (await client.get("/api/tasks", params={"state": "queued"})).json()["total"] == 5
        assert (await client.get("/api/tasks", params={"limit": 0})).status_code == 422


async def test_api_token_is_required_when_set(settings: Settings) -> None:
    from pydantic import SecretStr

    from web.app import create_app

    secured = settings.model_copy(update={"handoff_api_token": SecretStr("s3cret")})
    async with LiveServer(create_app(secured)) as server, httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/api/tasks")).status_code == 401
        assert (await client.get("/api/tasks", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await client.get("/api/tasks", headers={"Authorization": "Bearer s3cret"})).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200


async def test_healthz_and_metrics(api: LiveServer, settings: Settings, bare_repo: Path) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200, health.text
        assert set(health.json()["checks"]) == {"database", "redis", "docker"}
        async with running_worker(settings):
            task = (
                await client.post("/api/tasks", json={"repo": str(bare_repo), "instructions": "true"})
            ).json()
            await wait_for(client, task["id"])
        text = (await client.get("/metrics")).text
    assert 'handoff_tasks{state="succeeded"} 1.0' in text
    assert "handoff_queue_depth" in text
    assert "handoff_run_duration_seconds_count 1.0" in text


async def test_worker_start_removes_orphaned_containers(settings: Settings, sandbox_image: str) -> None:
    dclient = docker.DockerClient(version="1.41")
    mine: dict[str, str] = {"handoff.managed": "1", "handoff.instance": settings.instance_id}
    orphan = dclient.containers.create(
        sandbox_image, ["sleep", "60"], labels={**mine, "handoff.run": "r_gone", "handoff.task": "t_gone"}
    )
    foreign = dclient.containers.create(
        sandbox_image, ["sleep", "60"], labels={**mine, "handoff.run": "r_x", "handoff.instance": "other"}
    )
    try:
        async with running_worker(settings):
            # sparse: no inspect per listed container, which races with the removal (404).
            await wait_until(
                lambda: not dclient.containers.list(all=True, sparse=True, filters={"id": str(orphan.id)}),
                timeout=10,
            )
        # Another deployment's container on the same engine is left alone.
        assert dclient.containers.list(all=True, filters={"id": str(foreign.id)})
    finally:
        for container in (orphan, foreign):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


async def test_follow_up_runs_on_the_same_branch(sqlite_settings: Settings, bare_repo: Path) -> None:
    from web.app import create_app

    async with (
        LiveServer(create_app(sqlite_settings)) as api,
        httpx.AsyncClient(base_url=api.url) as client,
        running_worker(sqlite_settings),
    ):
        task = (
            await client.post(
                "/api/tasks", json={"repo": str(bare_repo), "instructions": "echo one > ONE.md"}
            )
        ).json()
        assert (await wait_for(client, task["id"]))["state"] == "succeeded"
        follow = await client.post(f"/api/tasks/{task['id']}/followup", json={"text": "echo two > TWO.md"})
        assert follow.status_code == 200 and follow.json()["state"] == "queued"
        await asyncio.sleep(0.1)
        done = await wait_for(client, task["id"])
        # A retry repeats the last request (the follow-up), on the same branch again.
        await client.post(f"/api/tasks/{task['id']}/retry")
        await asyncio.sleep(0.1)
        again = await wait_for(client, task["id"])
    assert done["state"] == "succeeded" and again["state"] == "succeeded"
    assert [r["instructions"] for r in again["runs"]] == [
        "echo one > ONE.md",
        "echo two > TWO.md",
        "echo two > TWO.md",
    ]
    branch = f"handoff/{task['id']}"
    files = git("--git-dir", str(bare_repo), "ls-tree", "--name-only", branch).split()
    assert {"ONE.md", "TWO.md"} <= set(files)
    assert len(git("--git-dir", str(bare_repo), "rev-list", f"main..{branch}").split()) == 2
