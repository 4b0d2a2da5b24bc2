"""Model gateway overhead: a streamed model response through the gateway vs sent directly.

Three processes, as in production: the fake provider (``tests/fakes/llm.py``, Anthropic Messages
streaming) stands in for the remote API; the run's gateway (:class:`jobs.gateway.session.RunGateway`
on its Unix socket, metering every stream) runs in a process of its own like the worker; this
process is the client. Three paths, interleaved request by request so drift hits all alike:

* **direct** — client → provider over loopback TCP (the reference);
* **gateway** — client → the gateway's Unix socket → provider;
* **forwarder + gateway** — client → the in-container forwarder (``handoff-forward``, here on the
  host) over loopback TCP → the gateway's socket → provider: the whole path a sandboxed CLI takes.

Two measurements: the time to the last byte of a short streamed answer (20 deltas), median of
``--requests`` (200); and the throughput of a long streamed answer (4,000 deltas, ~1 MB), median of
``--long`` (20). Targets: ≤ 2 ms added per request and ≥ 0.9x direct streaming throughput.
Run with ``uv run python bench/gateway.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port

SHORT = ("streamed answer text " * 20, 20)  # (text, deltas)
LONG = ("x" * 240 * 4000, 4000)
MODEL = "claude-test"


def _body(size: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 64,
        "stream": True,
        "system": size,
        "messages": [{"role": "user", "content": "go"}],
    }


async def serve_provider(port: int) -> None:
    """The fake provider: every request answers the short or long streamed reply its ``system`` names."""
    import uvicorn

    from tests.fakes.llm import FakeLLM, Reply

    class Sized(FakeLLM):
        def _next(self) -> Any:
            size = self.requests[-1].body.get("system")
            text, pieces = LONG if size == "long" else SHORT
            return Reply(text, usage=(1000, 100), pieces=pieces)

    fake = Sized()
    fake.requests = _Bounded()
    config = uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    await uvicorn.Server(config).serve()


class _Bounded(list[Any]):
    """Keeps only the latest request (the bench sends thousands)."""

    def append(self, item: Any) -> None:
        self[:] = [item]


async def serve_gateway(base: Path, provider_url: str) -> None:
    """The run's gateway on its socket; prints the token, then serves until stdin closes."""
    from core.budget import Budget
    from core.config import Price
    from jobs.gateway.model import Upstream
    from jobs.gateway.session import ModelAccess, RunGateway
    from tests.fakes.llm import API_KEY

    access = ModelAccess(
        upstreams={"anthropic": Upstream(provider_url, API_KEY)},
        provider="anthropic",
        models=frozenset({MODEL}),
        budget=Budget(),
        price_of=lambda _m: Price(input_per_mtok=3.0, output_per_mtok=15.0),
    )
    calls = 0

    def on_event(kind: str, data: dict[str, Any]) -> None:
        nonlocal calls
        calls += kind == "progress"

    async with RunGateway("r_bench", base, os.getuid(), os.getgid(), on_event, model=access) as sandbox:
        print(
            json.dumps(
                {
                    "token": sandbox.env["ANTHROPIC_API_KEY"],
                    "socket": str(sandbox.mounts[0].source / "model.sock"),
                    "forwarder": str(sandbox.mounts[1].source),
                }
            ),
            flush=True,
        )
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(json.dumps({"metered_calls": calls}), flush=True)


async def _timed(
    client: httpx.AsyncClient, url: str, size: str, headers: dict[str, str]
) -> tuple[float, int]:
    start = time.perf_counter()
    received = 0
    async with client.stream("POST", url, json=_body(size), headers=headers) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            received += len(chunk)
    return time.perf_counter() - start, received


async def measure(requests: int, long_runs: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="hgw-bench-", dir="/tmp"))
    port, fwd_port = free_port(), free_port()
    provider = subprocess.Popen([sys.executable, __file__, "--serve-provider", str(port)])
    gateway = subprocess.Popen(
        [sys.executable, __file__, "--serve-gateway", str(base), f"http://127.0.0.1:{port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    forwarder: subprocess.Popen[bytes] | None = None
    try:
        assert gateway.stdout is not None
        info = json.loads(gateway.stdout.readline())
        forwarder = subprocess.Popen([info["forwarder"], "-l", f"127.0.0.1:{fwd_port}={info['socket']}"])
        auth = {"x-api-key": info["token"]}
        from tests.fakes.llm import API_KEY

        paths = {
            "direct": (
                httpx.AsyncClient(timeout=60),
                f"http://127.0.0.1:{port}/v1/messages",
                {"x-api-key": API_KEY},
            ),
            "gateway": (
                httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=info["socket"]), timeout=60),
                "http://127.0.0.1:8080/v1/messages",
                auth,
            ),
            "forwarder + gateway": (
                httpx.AsyncClient(timeout=60),
                f"http://127.0.0.1:{fwd_port}/v1/messages",
                auth,
            ),
        }
        for _ in range(100):  # wait for every path to answer
            try:
                for client, url, headers in paths.values():
                    await _timed(client, url, "short", headers)
                break
            except (httpx.HTTPError, OSError):
                await asyncio.sleep(0.1)
        latency: dict[str, list[float]] = {name: [] for name in paths}
        throughput: dict[str, list[float]] = {name: [] for name in paths}
        sizes: dict[str, int] = {}
        for _ in range(requests):
            for name, (client, url, headers) in paths.items():
                elapsed, received = await _timed(client, url, "short", headers)
                latency[name].append(elapsed)
                sizes[name] = received
        for _ in range(long_runs):
            for name, (client, url, headers) in paths.items():
                elapsed, received = await _timed(client, url, "long", headers)
                throughput[name].append(received / elapsed)
        for client, _url, _headers in paths.values():
            await client.aclose()
    finally:
        if forwarder is not None:
            forwarder.send_signal(signal.SIGTERM)
            forwarder.wait()
        if gateway.stdin is not None:
            gateway.stdin.close()
        metered = json.loads(gateway.stdout.readline()) if gateway.stdout is not None else {}
        gateway.wait(timeout=30)
        provider.send_signal(signal.SIGINT)
        provider.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    med = {name: statistics.median(values) * 1000 for name, values in latency.items()}
    rate = {name: statistics.median(values) for name, values in throughput.items()}
    assert len(set(sizes.values())) == 1, f"the paths returned different streams: {sizes}"
    return {
        "requests": requests,
        "long_runs": long_runs,
        "short_stream_bytes": sizes["direct"],
        "median_ms": med,
        "added_ms": {name: med[name] - med["direct"] for name in paths if name != "direct"},
        "throughput_mb_s": {name: r / 1e6 for name, r in rate.items()},
        "throughput_ratio": {name: rate[name] / rate["direct"] for name in paths if name != "direct"},
        "metered_calls": metered.get("metered_calls"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--long", type=int, default=20)
    parser.add_argument("--serve-provider", type=int)
    parser.add_argument("--serve-gateway", nargs=2)
    args = parser.parse_args()
    if args.serve_provider:
        asyncio.run(serve_provider(args.serve_provider))
        return
    if args.serve_gateway:
        asyncio.run(serve_gateway(Path(args.serve_gateway[0]), args.serve_gateway[1]))
        return
    result = asyncio.run(measure(args.requests, args.long))
    print(json.dumps(result, indent=2))
    for name, added in result["added_ms"].items():
        ratio = result["throughput_ratio"][name]
        print(
            f"{name}: +{added:.2f} ms per streamed request (direct median {result['median_ms']['direct']:.2f} ms; "
            f"target <= 2 ms: {'OK' if added <= 2 else 'MISS'}); throughput {ratio:.2f}x direct "
            f"(target >= 0.9x: {'OK' if ratio >= 0.9 else 'MISS'})"
        )


if __name__ == "__main__":
    main()
