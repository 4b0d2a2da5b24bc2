"""The translators on streams recorded from the real CLIs: Claude Code 2.1.332 and Codex 0.171.0,
each run in its image (network ``none``) against the fake provider behind the model gateway, on a
task that reads ``calc.py``, edits it and finishes (tests/data/agent/*-edit.jsonl)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Price
from jobs.agent.translate import Event, Translator, translator_for

DATA = Path(__file__).parent / "data" / "agent"
PRICE = Price(input_per_mtok=3.0, output_per_mtok=15.0)


def _feed(translator: Translator, name: str) -> list[Event]:
    events: list[Event] = []
    for line in (DATA / name).read_text().splitlines():
        events += translator.feed(line)
    return events + translator.finish()


def _usage(events: list[Event]) -> tuple[int, int, float]:
    usages = [d["usage"] for t, d in events if t == "progress" and "usage" in d]
    return (
        sum(u["input_tokens"] for u in usages),
        sum(u["output_tokens"] for u in usages),
        sum(u["cost_usd"] for u in usages),
    )


RECORDED = [
    ("claude-code", "claude-code-2.1.332-edit.jsonl", ["Read", "Edit"], (3000, 300, 0.018)),
    ("codex", "codex-0.171.0-edit.jsonl", ["bash", "bash"], (3000, 300, (3000 * 3 + 300 * 15) / 1e6)),
]


@pytest.mark.parametrize(("output", "name", "tools", "usage"), RECORDED, ids=["claude-code", "codex"])
def test_a_real_cli_stream_becomes_run_events(
    output: str, name: str, tools: list[str], usage: tuple[int, int, float]
) -> None:
    translator = translator_for(output, PRICE)
    assert translator is not None
    events = _feed(translator, name)
    calls = [d for t, d in events if t == "tool" and d["phase"] == "call"]
    results = [d for t, d in events if t == "tool" and d["phase"] == "result"]
    assert [c["name"] for c in calls] == [r["name"] for r in results] == tools
    assert all(r["ok"] for r in results)
    assert "return a - b" in results[0]["output"]  # the file it read
    messages = [d["text"] for t, d in events if t == "message"]
    assert messages == ["Reading.", "Fixing.", "Done: fixed add."]
    assert [d["summary"] for t, d in events if t == "result"] == ["Done: fixed add."]
    assert not [d for t, d in events if t == "error"]  # Codex's model-metadata warning is a log line
    # Unmetered, the CLI's own figures count (Claude Code's final result corrects its running
    # count, whose per-message output is the stream's first figure, 1 token).
    tokens_in, tokens_out, cost = _usage(events)
    assert (tokens_in, tokens_out) == usage[:2] and cost == pytest.approx(usage[2])


@pytest.mark.parametrize(("output", "name"), [(r[0], r[1]) for r in RECORDED], ids=["claude-code", "codex"])
def test_a_metered_run_ignores_what_the_cli_says_it_used(output: str, name: str) -> None:
    translator = translator_for(output, PRICE, metered=True)
    assert translator is not None
    events = _feed(translator, name)
    assert not [d for t, d in events if "usage" in d]
    assert [d["summary"] for t, d in events if t == "result"] == ["Done: fixed add."]


def test_codex_warnings_and_retry_notices_are_logged() -> None:
    translator = translator_for("codex")
    assert translator is not None
    lines = [
        '{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata not found"}}',
        '{"type":"error","message":"Reconnecting... 2/5 (stream disconnected before completion)"}',
    ]
    assert [e for line in lines for e in translator.feed(line)] == [
        ("log", {"text": "codex warning: Model metadata not found"}),
        ("log", {"text": "codex: Reconnecting... 2/5 (stream disconnected before completion)"}),
    ]
