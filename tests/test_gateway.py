"""The model gateway over a real Unix socket, in front of the fake provider on loopback.

Clients are the real SDKs (anthropic, openai) where they fit, raw httpx where a test reads bytes.
What the gateway claims is checked against what the provider saw and sent: the key it received,
the models it was asked for, the token counts it reported, whether its stream ran to the end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from core.budget import Budget
from core.config import Price
from jobs.gateway.meter import CallMeter, SSEScanner, Usage
from jobs.gateway.model import Upstream
from jobs.gateway.session import ModelAccess, RunGateway, SandboxAccess
from tests.fakes.llm import API_KEY, OPENAI_KEY, Call, FakeLLM, Reply
from tests.support.env import LiveServer

PRICES = {
    "claude-test": Price(input_per_mtok=3.0, output_per_mtok=15.0),
    "gpt-test": Price(input_per_mtok=2.0, output_per_mtok=8.0),
}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short base directory (Unix socket paths hold ~108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hgw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def provider() -> AsyncIterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()
    async with LiveServer(fake.app) as server:
        yield fake, server.url


class Recorder:
    """The run events and budget stops a gateway reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.exhausted: list[str] = []

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def usages(self) -> list[dict[str, Any]]:
        return [d for k, d in self.events if k == "progress" and d.get("metered") == "gateway"]


def _gateway(
    base: Path,
    url: str,
    rec: Recorder,
    provider: str = "anthropic",
    *,
    models: frozenset[str] | None = frozenset({"claude-test", "gpt-test"}),
    budget: Budget | None = None,
    run_id: str = "r_test",
) -> RunGateway:
    access = ModelAccess(
        upstreams={"anthropic": Upstream(url, API_KEY), "openai": Upstream(url + "/v1", OPENAI_KEY)},
        provider=provider,  # type: ignore[arg-type]
        models=models,
        budget=budget or Budget(),
        price_of=PRICES.get,
    )
    return RunGateway(run_id, base, 1000, 1000, rec.event, model=access, on_exhausted=rec.exhausted.append)


def _socket(access: SandboxAccess) -> str:
    run_dir, container_dir = access.mounts[0].source, access.mounts[0].target
    assert container_dir == "/handoff/gw" and access.listeners == {8080: "/handoff/gw/model.sock"}
    return str(run_dir / "model.sock")


def _client(access: SandboxAccess) -> httpx.AsyncClient:
    """A client of the gateway's socket (the container reaches it as 127.0.0.1:8080)."""
    transport = httpx.AsyncHTTPTransport(uds=_socket(access))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080", timeout=30)


SCRIPT = [
    Reply("Reading the file.", (Call("read_file", {"path": "calc.py"}),), usage=(1234, 56)),
    Reply("All done.", usage=(2000, 300)),
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_anthropic_through_the_gateway_is_metered_with_the_providers_counts(
    provider: tuple[FakeLLM, str], short_dir: Path, stream: bool
) -> None:
    fake, url = provider
    fake.add(*SCRIPT)
    rec = Recorder()
    async with _gateway(short_dir, url, rec) as access, _client(access):
        assert access.env["ANTHROPIC_API_KEY"] != API_KEY and access.env["ANTHROPIC_API_KEY"].startswith(
            "hgw_"
        )
        # The SDKs speak httpx2 (httpx's API): a client of their own on the gateway's socket.
        sdk = anthropic.AsyncAnthropic(
            api_key=access.env["ANTHROPIC_API_KEY"],
            base_url=access.env["ANTHROPIC_BASE_URL"],
            http_client=httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=_socket(access))),
            max_retries=0,
        )
        texts = []
        for _ in SCRIPT:
            args: dict[str, Any] = {
                "model": "claude-test",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": "hi"}],
            }
            if stream:
                async with sdk.messages.stream(**args) as s:
                    texts.append(await s.get_final_text())
            else:
                message = await sdk.messages.create(**args)
                texts.append("".join(b.text for b in message.content if b.type == "text"))
    assert texts == ["Reading the file.", "All done."]
    # The provider got the real key, never the token; the client never had the key.
    assert {r.headers["x-api-key"] for r in fake.requests} == {API_KEY}
    assert all("authorization" not in r.headers for r in fake.requests)
    assert [(u["usage"]["input_tokens"], u["usage"]["output_tokens"]) for u in rec.usages()] == [
        (1234, 56),
        (2000, 300),
    ]
    assert sum(u["usage"]["cost_usd"] for u in rec.usages()) == pytest.approx((3234 * 3 + 356 * 15) / 1e6)
    assert not any(u.get("estimated") for u in rec.usages())


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_openai_chat_and_responses_are_metered(
    provider: tuple[FakeLLM, str], short_dir: Path, stream: bool
) -> None:
    fake, url = provider
    fake.add(
        Reply("chat answer", usage=(700, 70)),
        Reply("", (Call("exec_command", {"cmd": "ls"}),), usage=(900, 90)),
    )
    rec = Recorder()
    async with _gateway(short_dir, url, rec, "openai") as access:
        assert access.env["OPENAI_BASE_URL"] == "http://127.0.0.1:8080/v1"
        sdk = openai.AsyncOpenAI(
            api_key=access.env["OPENAI_API_KEY"],
            base_url=access.env["OPENAI_BASE_URL"],
            http_client=httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=_socket(access))),
            max_retries=0,
        )
        messages: Any = [{"role": "user", "content": "hi"}]
        if stream:
            chunks = [
                c
                async for c in await sdk.chat.completions.create(
                    model="gpt-test", messages=messages, stream=True
                )
            ]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            events = [e async for e in await sdk.responses.create(model="gpt-test", input="hi", stream=True)]
            call = next(e.item for e in events if e.type == "response.output_item.done")
        else:
            completion = await sdk.chat.completions.create(model="gpt-test", messages=messages)
            text = completion.choices[0].message.content or ""
            response = await sdk.responses.create(model="gpt-test", input="hi")
            call = response.output[0]
    assert text == "chat answer"
    assert call.type == "function_call" and json.loads(call.arguments) == {"cmd": "ls"}
    assert {r.headers["authorization"] for r in fake.requests} == {f"Bearer {OPENAI_KEY}"}
    # The client did not ask for usage in its stream: the gateway asked for it, to meter it.
    if stream:
        assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    assert [(u["usage"]["input_tokens"], u["usage"]["output_tokens"]) for u in rec.usages()] == [
        (700, 70),
        (900, 90),
    ]
    assert sum(u["usage"]["cost_usd"] for u in rec.usages()) == pytest.approx((1600 * 2 + 160 * 8) / 1e6)


async def test_a_bad_token_an_unlisted_model_or_another_endpoint_never_reaches_the_provider(
    provider: tuple[FakeLLM, str], short_dir: Path
) -> None:
    fake, url = provider
    fake.add(Reply("ok", sticky=True))
    rec = Recorder()
    body = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        _gateway(short_dir, url, rec, models=frozenset({"claude-test"})) as access,
        _client(access) as http,
    ):
        token = access.env["ANTHROPIC_API_KEY"]
        # The attack's control: with the run's token and an allowed model the call goes through.
        ok = await http.post("/v1/messages", json=body, headers={"x-api-key": token})
        assert ok.status_code == 200 and len(fake.requests) == 1
        refused = [
            await http.post("/v1/messages", json=body, headers={"x-api-key": API_KEY}),  # the real key itself
            await http.post("/v1/messages", json=body, headers={"x-api-key": token + "x"}),
            await http.post("/v1/messages", json=body),
            await http.post(
                "/v1/messages", json={**body, "model": "claude-opus-4-1"}, headers={"x-api-key": token}
            ),
            await http.post("/v1/messages/batches", json=body, headers={"x-api-key": token}),
            await http.get("/v1/models", headers={"x-api-key": token}),
            await http.post("/v1/messages", content=b"not json", headers={"x-api-key": token}),
        ]
    assert [r.status_code for r in refused] == [401, 401, 401, 403, 404, 404, 400]
    assert (
        refused[3].json()["error"]["message"]
        == "model 'claude-opus-4-1' is not allowed here (allowed: claude-test)"
    )
    assert len(fake.requests) == 1  # none of them reached the provider
    logged = [d["text"] for k, d in rec.events if k == "log"]
    assert sum("bad or expired gateway token" in t for t in logged) == 3
    assert any("model 'claude-opus-4-1' is not allowed" in t for t in logged)


async def test_a_run_stops_at_its_cost_budget_mid_stream(
    provider: tuple[FakeLLM, str], short_dir: Path
) -> None:
    fake, url = provider
    # A long answer in 200 slow pieces: 1000 input tokens ($0.003), then ~5,000 output tokens
    # ($0.075) against a $0.02 budget — it must be cut about a quarter of the way in.
    long = Reply("word " * 4000, usage=(1000, 5000), pieces=200, piece_delay_s=0.005)
    fake.add(long, Reply("never", sticky=True))
    rec = Recorder()
    body = {
        "model": "claude-test",
        "max_tokens": 8000,
        "stream": True,
        "messages": [{"role": "user", "content": "go"}],
    }
    async with (
        _gateway(short_dir, url, rec, budget=Budget(max_cost_usd=0.02)) as access,
        _client(access) as http,
    ):
        headers = {"x-api-key": access.env["ANTHROPIC_API_KEY"]}
        async with http.stream("POST", "/v1/messages", json=body, headers=headers) as response:
            raw = b"".join([chunk async for chunk in response.aiter_bytes()])
        again = await http.post("/v1/messages", json=body, headers=headers)
    events = [e for e in raw.decode().split("\n\n") if e]
    text = "".join(
        json.loads(e.split("data: ", 1)[1])["delta"]["text"]
        for e in events
        if e.startswith("event: content_block_delta")
    )
    assert events[-1].startswith("event: error") and "budget_exceeded" in events[-1]
    assert 0 < len(text) < len(long.text) / 2  # cut while streaming, not after
    assert fake.streams[0] == "cut"
    assert rec.exhausted and rec.exhausted[0].startswith("$0.02")
    (usage,) = rec.usages()
    assert usage["estimated"] is True and usage["usage"]["input_tokens"] == 1000
    assert usage["usage"]["cost_usd"] > 0.02
    # Once used up, the budget refuses the next call before it reaches the provider.
    assert again.status_code == 403 and "budget is used up" in again.json()["error"]["message"]
    assert len(fake.requests) == 1


async def test_a_gateway_token_is_useless_after_its_run(
    provider: tuple[FakeLLM, str], short_dir: Path
) -> None:
    fake, url = provider
    fake.add(Reply("ok", sticky=True))
    rec = Recorder()
    body = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    first = _gateway(short_dir, url, rec, run_id="r_one")
    access = await first.start()
    token, sock = access.env["ANTHROPIC_API_KEY"], access.mounts[0].source / "model.sock"
    async with _client(access) as http:
        assert (await http.post("/v1/messages", json=body, headers={"x-api-key": token})).status_code == 200
    await first.close()
    # The run's socket is gone with its directory...
    assert not sock.exists() and not access.mounts[0].source.exists()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock))) as http:
            await http.post("http://gw/v1/messages", json=body, headers={"x-api-key": token})
    # ...and another run's gateway does not take the old token.
    async with _gateway(short_dir, url, rec, run_id="r_two") as other, _client(other) as http:
        stale = await http.post("/v1/messages", json=body, headers={"x-api-key": token})
        fresh = await http.post(
            "/v1/messages", json=body, headers={"x-api-key": other.env["ANTHROPIC_API_KEY"]}
        )
    assert (stale.status_code, fresh.status_code) == (401, 200)
    assert len(fake.requests) == 2


def test_usage_event_data_is_what_budgets_count() -> None:
    data = Usage("claude-test", 10, 20, 0.5, estimated=True).event_data()
    assert data == {
        "step": "model",
        "model": "claude-test",
        "metered": "gateway",
        "usage": {"input_tokens": 10, "output_tokens": 20, "cost_usd": 0.5},
        "estimated": True,
    }


def test_the_scanner_reads_events_split_anywhere_and_crlf_streams() -> None:
    stream = (
        b'event: message_start\r\ndata: {"type":"message_start","message":{"usage":{"input_tokens":7}}}\r\n\r\n'
        b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"abcdefgh"}}\r\n\r\n'
        b": a comment\r\n\r\n"
        b'event: message_delta\r\ndata: {"type":"message_delta","usage":{"output_tokens":3}}\r\n\r\n'
    )
    for size in (1, 2, 7, 64, len(stream)):
        scanner, call = SSEScanner(), CallMeter("anthropic", "claude-test")
        events = [e for i in range(0, len(stream), size) for e in scanner.feed(stream[i : i + size])]
        assert [name for name, _ in events] == [b"message_start", b"content_block_delta", b"message_delta"]
        for name, data in events[:2]:
            call.event(name, data)
        assert (call.input_tokens, call.output_estimate, call.final) == (7, 2, False)  # 8 chars ≈ 2 tokens
        call.event(*events[2])
        assert (call.input_tokens, call.output_estimate, call.final) == (7, 3, True)


def test_delta_envelopes_are_learned_once_and_chat_usage_is_found_without_parsing_every_chunk() -> None:
    call = CallMeter("chat", "gpt-test")
    head = '{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"%s"}}]}'
    for text in ("", "x" * 40, "y" * 400):
        call.event(b"", (head % text).encode())
    assert call.output_estimate == 110  # 440 characters / 4
    call.event(b"", b'{"id":"c","choices":[],"usage": {"prompt_tokens": 12, "completion_tokens": 99}}')
    call.event(b"", b"[DONE]")
    assert (call.input_tokens, call.output_estimate, call.final) == (12, 99, True)


async def test_a_body_past_the_cap_is_refused_before_it_is_read_whole(
    provider: tuple[FakeLLM, str], short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobs.gateway.model as gateway_model

    fake, url = provider
    monkeypatch.setattr(gateway_model, "MAX_BODY", 1000)
    body = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 2000}]}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap counts as it reads
        data = json.dumps(body).encode()
        for i in range(0, len(data), 100):
            yield data[i : i + 100]

    async with _gateway(short_dir, url, Recorder()) as access, _client(access) as http:
        headers = {"x-api-key": access.env["ANTHROPIC_API_KEY"]}
        declared = await http.post("/v1/messages", json=body, headers=headers)
        streamed = await http.post("/v1/messages", content=chunks(), headers=headers)
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert fake.requests == []
