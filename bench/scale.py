"""Scale-out, measured: API processes and workers over one PostgreSQL and one Redis on loopback.

Every process is a real ``handoff serve`` / ``handoff worker`` started here, against a PostgreSQL
cluster and a Redis server of the benchmark's own (Debian binaries, free ports, removed after), so
nothing else on the machine is disturbed and nothing else disturbs the figures. Three parts:

* ``cpu`` — a worker's orchestration CPU per concurrently running task: one worker with ``--tasks``
  (default 50) runs at once, first quiet (``sleep``), then chatty (each printing about 100 lines a
  second). The worker process's CPU time (all its threads; ``/proc``) over ``--seconds``, less the
  same worker's idle CPU (the reference, measured first in the same run), per running task, in % of
  one core. Target: ≤ 0.3 % quiet, ≤ 2 % chatty (one 2-core worker host drives 100+ runs).
* ``ingest`` — signed 5 KB webhook deliveries (as ``bench/ingest.py``) against 1, 2 and 4 API
  processes, each on its own port, 64 connections spread over them (``wrk``, or a Python load
  generator where ``wrk`` is not installed); deliveries per second and the ratio to one process.
  Target: ≥ 1.7 times with 2.
* ``burst`` — 2 API processes and 2 workers with capacity for 100 runs; 100 tasks posted at once:
  seconds until all are ``running`` and until all their containers have started, next to the
  reference of starting 100 containers straight through the Docker SDK (8 threads); and that no
  task ran twice (one run each, across both workers).

Run: ``uv run python bench/scale.py [--part cpu|ingest|burst|all] [--tasks 50] [--seconds 20]``
(needs Docker, the sandbox image ``handoff-sandbox:minimal``, and PostgreSQL/Redis binaries).
Prints JSON, then one verdict line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bare_repo, free_port
from bench.ingest import SECRET, _key, payload
from github_app.signature import sign
from tests.support.services import postgres_server, redis_server

IMAGE = "handoff-sandbox:minimal"
QUIET = "sleep 100000"
# About 100 lines a second: ten lines, then a tenth of a second's pause.
CHATTY = (
    "n=0; while :; do for j in 0 1 2 3 4 5 6 7 8 9; do "
    'echo "step $n.$j: checked src/module_$j.py, 42 tests pass, moving on"; done; '
    "n=$((n+1)); sleep 0.1; done"
)
TARGET_QUIET_PCT, TARGET_CHATTY_PCT, TARGET_SCALE_2 = 0.3, 2.0, 1.7
CONNECTIONS = 64
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes -----------------------------------------------------------------------------------


class Cluster:
    """The environment shared by every process, and the processes started in it."""

    def __init__(self, work: Path, database_url: str, redis_url: str, max_running: int) -> None:
        self.work = work
        self.database_url = database_url
        config = {
            "default_profile": "shell",
            "limits": {"max_running": max_running, "per_repo": max_running},
            "profiles": {
                "shell": {
                    "image": IMAGE,
                    "limits": {
                        "memory": "64m",
                        "pids": 64,
                        "cpus": 0.5,
                        "timeout_s": 3600,
                        "tmpfs_size": "8m",
                    },
                }
            },
        }
        (work / "handoff.yml").write_text(yaml.safe_dump(config))
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "HANDOFF_CONFIG": str(work / "handoff.yml"),
            "HANDOFF_QUEUE_NAME": f"handoff:scale:{uuid.uuid4().hex[:8]}",
            "HANDOFF_SESSION_SECRET": uuid.uuid4().hex,  # shared by every API replica
            "HANDOFF_LOG_LEVEL": "WARNING",
            "GITHUB_APP_ID": "4242",
            "GITHUB_PRIVATE_KEY": _key(),
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_API_URL": "http://127.0.0.1:9",  # never called by the webhook route
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """``python -m web <args>`` in this cluster's environment (plus ``env``)."""
        log = (self.work / f"{args[0]}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "web", *args],
            cwd=Path(__file__).resolve().parent.parent,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def api(self) -> tuple[subprocess.Popen[bytes], str]:
        """An API process on a free port; its URL."""
        port = free_port()
        return self.start("serve", "--port", str(port)), f"http://127.0.0.1:{port}"

    def worker(self) -> subprocess.Popen[bytes]:
        """A worker process with a workspace and mirror directory of its own (as on its own host)."""
        n = len(self.procs)
        return self.start(
            "worker",
            HANDOFF_WORKSPACE_DIR=str(self.work / f"host-{n}" / "workspaces"),
            HANDOFF_MIRROR_DIR=str(self.work / f"host-{n}" / "mirrors"),
        )

    def stop(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Stop ``proc`` (default: all), politely first."""
        for p in [proc] if proc is not None else list(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(40)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
            if p in self.procs:
                self.procs.remove(p)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def cpu_rate(pid: int, seconds: float) -> float:
    """Cores used by ``pid`` on average over the next ``seconds``."""
    before, start = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)


async def ready(url: str, timeout: float = 60.0) -> None:
    """Until the API at ``url`` answers."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/api/tasks", params={"limit": 1})).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"the API at {url} did not come up")


# -- tasks ---------------------------------------------------------------------------------------


async def post_tasks(urls: list[str], repo: Path, instructions: str, count: int) -> list[str]:
    """``count`` tasks posted at once, spread over the APIs; their ids."""
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{urls[i % len(urls)]}/api/tasks", json={"repo": str(repo), "instructions": instructions}
                )
                for i in range(count)
            )
        )
    for r in responses:
        if r.status_code != 201:
            raise SystemExit(f"POST /api/tasks answered {r.status_code}: {r.text}")
    return [str(r.json()["id"]) for r in responses]


async def snapshot(url: str, ids: list[str]) -> list[dict[str, Any]]:
    """Each task with its runs."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        out = []
        for chunk in range(0, len(ids), 20):
            out += [
                r.json()
                for r in await asyncio.gather(
                    *(client.get(f"/api/tasks/{t}") for t in ids[chunk : chunk + 20])
                )
            ]
        return out


async def until(url: str, ids: list[str], check: Any, timeout: float, what: str) -> float:
    """Seconds until ``check(tasks)`` holds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check(await snapshot(url, ids)):
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def all_running(tasks: list[dict[str, Any]]) -> bool:
    return all(t["state"] == "running" for t in tasks)


def all_started(tasks: list[dict[str, Any]]) -> bool:
    return all(t["runs"] and t["runs"][-1].get("container_id") for t in tasks)


TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "budget_exceeded"}


async def cancel_all(url: str, ids: list[str]) -> None:
    """Cancel every task and wait for all of them to end."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.gather(*(client.post(f"/api/tasks/{t}/cancel") for t in ids))
    await until(url, ids, lambda ts: all(t["state"] in TERMINAL for t in ts), 300, "the tasks to end")


def events_stored(database_url: str, ids: list[str]) -> int:
    """Events stored so far for the tasks (read straight from the database)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM runevent WHERE task_id = ANY(%s)", (ids,)).fetchone()
    return int(row[0]) if row else 0


# -- parts ---------------------------------------------------------------------------------------


async def part_cpu(cluster: Cluster, repo: Path, tasks: int, seconds: float) -> dict[str, Any]:
    """One worker, ``tasks`` runs at once: quiet, then chatty; CPU per running task."""
    _api, url = cluster.api()
    worker = cluster.worker()
    await ready(url)
    await asyncio.sleep(5)  # the worker's start-up (imports, orphan sweep) is not the steady state
    idle = await cpu_rate(worker.pid, seconds)
    report: dict[str, Any] = {
        "tasks": tasks,
        "window_s": seconds,
        "idle_worker_cores (reference)": round(idle, 4),
    }
    for kind, command in (("quiet", QUIET), ("chatty", CHATTY)):
        ids = await post_tasks([url], repo, command, tasks)
        started = await until(url, ids, all_started, 300, f"{tasks} {kind} runs to start")
        await asyncio.sleep(5)
        before = events_stored(cluster.database_url, ids)
        busy = await cpu_rate(worker.pid, seconds)
        lines = (events_stored(cluster.database_url, ids) - before) / seconds
        await cancel_all(url, ids)
        report[kind] = {
            "all_started_after_s": round(started, 1),
            "worker_cores": round(busy, 4),
            "per_task_pct_of_a_core": round((busy - idle) / tasks * 100, 3),
            "per_task_pct_gross": round(busy / tasks * 100, 3),
            "events_stored_per_s": round(lines, 1),
        }
    report["worker_alive"] = worker.poll() is None
    cluster.stop()
    return report


async def part_ingest(cluster: Cluster, seconds: float) -> dict[str, Any]:
    """Webhook deliveries per second with 1, 2 and 4 API processes."""
    body = payload()
    (cluster.work / "body.json").write_bytes(body)
    signature = sign(SECRET, body)
    wrk = shutil.which("wrk")
    report: dict[str, Any] = {"generator": "wrk" if wrk else "python asyncio", "connections": CONNECTIONS}
    rates: dict[int, float] = {}
    for m in (1, 2, 4):
        urls = []
        for _ in range(m):
            _proc, url = cluster.api()
            urls.append(url)
        for url in urls:
            await ready(url)
        await _load(cluster.work, urls, signature, 2.0, wrk)  # warm up every pool
        rate, non2xx = await _load(cluster.work, urls, signature, seconds, wrk)
        rates[m] = rate
        report[f"{m}_api"] = {"deliveries_per_s": round(rate), "non_2xx": non2xx}
        cluster.stop()
    report["scaling_2_vs_1"] = round(rates[2] / rates[1], 2)
    report["scaling_4_vs_1"] = round(rates[4] / rates[1], 2)
    return report


WRK_SCRIPT = """
local counter = 0
local body = io.open("{body}", "rb"):read("*a")
request = function()
  counter = counter + 1
  local headers = {{}}
  headers["Content-Type"] = "application/json"
  headers["X-GitHub-Event"] = "issue_comment"
  headers["X-Hub-Signature-256"] = "{signature}"
  headers["X-GitHub-Delivery"] = string.format("{prefix}-%012d", counter)
  return wrk.format("POST", "/github/webhooks", headers, body)
end
"""


async def _load(
    work: Path, urls: list[str], signature: str, seconds: float, wrk: str | None
) -> tuple[float, int]:
    """Deliveries per second over ``seconds`` against every URL at once; and the non-2xx answers."""
    per = max(1, CONNECTIONS // len(urls))
    if wrk is None:
        from bench.ingest import _connection

        latencies: list[float] = []
        codes: dict[int, int] = {}
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(
            *(
                _connection(
                    int(url.rsplit(":", 1)[1]),
                    "/github/webhooks",
                    payload(),
                    signature,
                    deadline,
                    latencies,
                    codes,
                )
                for url in urls
                for _ in range(per)
            )
        )
        bad = sum(n for code, n in codes.items() if not 200 <= code < 300)
        return len(latencies) / (time.perf_counter() - start), bad
    procs = []
    for url in urls:
        script = work / f"wrk-{uuid.uuid4().hex[:8]}.lua"
        prefix = uuid.uuid4().hex[:20]
        script.write_text(WRK_SCRIPT.format(body=work / "body.json", signature=signature, prefix=prefix))
        procs.append(
            await asyncio.create_subprocess_exec(
                wrk,
                "-t1",
                f"-c{per}",
                f"-d{seconds:g}s",
                "-s",
                str(script),
                url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        )
    total, bad = 0.0, 0
    for proc in procs:
        out = (await proc.communicate())[0].decode()
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                total += float(line.split()[1])
            if "Non-2xx" in line:
                bad += int(line.split()[-1])
    return total, bad


async def part_burst(cluster: Cluster, repo: Path, tasks: int) -> dict[str, Any]:
    """2 APIs, 2 workers, capacity for all: a burst of ``tasks`` posted at once."""
    reference = await asyncio.to_thread(_docker_floor, tasks)
    apis = [cluster.api() for _ in range(2)]
    workers = [cluster.worker() for _ in range(2)]
    urls = [url for _p, url in apis]
    for url in urls:
        await ready(url)
    await asyncio.sleep(5)
    start = time.monotonic()
    ids = await post_tasks(urls, repo, QUIET, tasks)
    posted = time.monotonic() - start
    running = await until(urls[0], ids, all_running, 300, "the burst to be running") + posted
    started = await until(urls[0], ids, all_started, 300, "the burst's containers") + posted
    await cancel_all(urls[0], ids)
    final = await snapshot(urls[0], ids)
    runs = [len(t["runs"]) for t in final]
    by_worker: dict[str, int] = {}
    for t in final:
        for r in t["runs"]:
            by_worker[r["worker_id"]] = by_worker.get(r["worker_id"], 0) + 1
    report = {
        "tasks": tasks,
        "posted_in_s": round(posted, 2),
        "all_running_after_s": round(running, 2),
        "all_containers_started_after_s": round(started, 2),
        "reference_docker_sdk_start_s": round(reference, 2),
        "runs_per_task": sorted(set(runs)),
        "no_task_ran_twice": all(n == 1 for n in runs),
        "runs_by_worker": sorted(by_worker.values()),
        "workers_alive": all(w.poll() is None for w in workers),
    }
    cluster.stop()
    return report


def _docker_floor(count: int) -> float:
    """Seconds to create and start ``count`` containers through the Docker SDK, 8 threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    import docker

    client = docker.DockerClient(version="1.41")
    label = f"handoff-scale-{uuid.uuid4().hex[:8]}"

    def one(_: int) -> Any:
        container = client.containers.create(
            IMAGE, ["sleep", "600"], network_mode="none", labels={label: "1"}, user="1000:1000"
        )
        container.start()
        return container

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        containers = list(pool.map(one, range(count)))
    took = time.monotonic() - start
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: c.remove(force=True), containers))
    return took


# -- main ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def cluster(max_running: int) -> Iterator[Cluster]:
    """A private PostgreSQL and Redis, and a cluster environment over them."""
    work = Path(tempfile.mkdtemp(prefix="handoff-scale-"))
    try:
        with postgres_server() as pg, redis_server(work / "redis") as redis:
            c = Cluster(work, pg.url, redis.url, max_running)
            try:
                yield c
            finally:
                c.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def main(part: str, tasks: int, seconds: float, burst: int) -> int:
    """Run the parts asked for; print the report and the verdicts."""
    repo = bare_repo()
    report: dict[str, Any] = {}
    if part in ("cpu", "all"):
        with cluster(tasks + 10) as c:
            report["cpu"] = await part_cpu(c, repo, tasks, seconds)
    if part in ("ingest", "all"):
        with cluster(10) as c:
            report["ingest"] = await part_ingest(c, min(seconds, 10.0))
    if part in ("burst", "all"):
        with cluster(burst + 10) as c:
            report["burst"] = await part_burst(c, repo, burst)
    print(json.dumps(report, indent=2))
    ok = True
    if "cpu" in report:
        q, c = (
            report["cpu"]["quiet"]["per_task_pct_of_a_core"],
            report["cpu"]["chatty"]["per_task_pct_of_a_core"],
        )
        print(
            f"cpu per running task: quiet {q:.3f} % (target ≤ {TARGET_QUIET_PCT} %) {'✔' if q <= TARGET_QUIET_PCT else '✘'}; "
            f"chatty {c:.3f} % (target ≤ {TARGET_CHATTY_PCT} %) {'✔' if c <= TARGET_CHATTY_PCT else '✘'}"
        )
    if "ingest" in report:
        r = report["ingest"]
        print(
            f"ingest: {r['1_api']['deliveries_per_s']}/s with 1 API, {r['2_api']['deliveries_per_s']}/s with 2 "
            f"({r['scaling_2_vs_1']}x, target ≥ {TARGET_SCALE_2}x) {'✔' if r['scaling_2_vs_1'] >= TARGET_SCALE_2 else '✘'}, "
            f"{r['4_api']['deliveries_per_s']}/s with 4 ({r['scaling_4_vs_1']}x)"
        )
    if "burst" in report:
        b = report["burst"]
        ok = ok and b["no_task_ran_twice"] and b["workers_alive"]
        print(
            f"burst of {b['tasks']}: all running after {b['all_running_after_s']} s, all containers started after "
            f"{b['all_containers_started_after_s']} s (Docker SDK alone: {b['reference_docker_sdk_start_s']} s); "
            f"no task ran twice: {'✔' if b['no_task_ran_twice'] else '✘'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--part", choices=["cpu", "ingest", "burst", "all"], default="all")
    parser.add_argument("--tasks", type=int, default=50, help="runs at once for the CPU part")
    parser.add_argument("--burst", type=int, default=100, help="tasks in the burst")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.part, args.tasks, args.seconds, args.burst)))
