"""Pure core: state machine, event parsing, settings, config, and the import boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.config import load_config
from core.errors import ConfigError, InvalidTransition, NotFound
from core.events import MAX_LINE, parse_line
from core.settings import Settings, load_settings
from core.states import TERMINAL, TRANSITIONS, TaskState, check_transition

ALLOWED = [
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "waiting"),
    ("waiting", "queued"),
    ("running", "succeeded"),
    ("running", "timed_out"),
    ("running", "budget_exceeded"),
    ("running", "queued"),
    ("running", "waiting"),
    ("failed", "queued"),
    ("succeeded", "queued"),
]
REFUSED = [
    ("queued", "succeeded"),
    ("queued", "timed_out"),
    ("succeeded", "running"),
    ("cancelled", "failed"),
    ("waiting", "succeeded"),
    ("running", "running"),
]


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_allowed_transitions(current: str, target: str) -> None:
    assert check_transition(current, target) is TaskState(target)


@pytest.mark.parametrize(("current", "target"), REFUSED, ids=[f"{a}->{b}" for a, b in REFUSED])
def test_refused_transitions(current: str, target: str) -> None:
    with pytest.raises(InvalidTransition, match=f"from '{current}' to '{target}'"):
        check_transition(current, target)


def test_every_state_has_transitions_and_terminal_states_only_requeue() -> None:
    assert set(TRANSITIONS) == set(TaskState)
    for state in TERMINAL:
        assert TRANSITIONS[state] == {TaskState.queued}


def test_json_event_line() -> None:
    event = parse_line('{"type": "progress", "ts": "2026-01-02T03:04:05Z", "data": {"step": "edit"}}\n')
    assert event.type == "progress"
    assert event.data == {"step": "edit"}
    assert event.ts.isoformat() == "2026-01-02T03:04:05+00:00"


@pytest.mark.parametrize(
    "line",
    ['{"type": "nonsense"}', '{"no_type": 1}', "[1, 2]", "{broken json", "plain text", ""],
    ids=["unknown-type", "no-type", "array", "broken", "text", "empty"],
)
def test_other_lines_are_logs(line: str) -> None:
    event = parse_line(line)
    assert event.type == "log"
    assert event.data == {"text": line}


def test_non_object_data_is_wrapped_and_long_lines_cut() -> None:
    assert parse_line('{"type": "message", "data": "hi"}').data == {"value": "hi"}
    long = parse_line("x" * (MAX_LINE + 10))
    assert len(long.data["text"]) < MAX_LINE + 100
    assert long.data["text"].endswith("[10 characters cut]")


def test_settings_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings(database_url="mysql://x")


def test_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("profiles:\n  x:\n    imagee: typo\n")
    with pytest.raises(ConfigError, match=r"profiles\.x\.imagee"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml")
    bad.write_text("default_profile: nope\nprofiles:\n  x: {}\n")
    with pytest.raises(ConfigError, match="default_profile 'nope'"):
        load_config(bad)
    with pytest.raises(NotFound, match="unknown agent profile 'zzz'"):
        load_config(None).profile("zzz")


FORBIDDEN = {
    "fastapi",
    "starlette",
    "arq",
    "redis",
    "docker",
    "githubkit",
    "slack_bolt",
    "slack_sdk",
    "anthropic",
    "openai",
    "httpx",
    "uvicorn",
    "typer",
    "jobs",
    "web",
    "bot",
    "github_app",
}


def test_core_imports_no_framework() -> None:
    core = Path(__file__).resolve().parent.parent / "core"
    offenders = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_secret_values_are_every_secret_setting() -> None:
    settings = Settings(
        _env_file=None,
        slack_bot_token="xoxb-1",
        anthropic_api_key="sk-ant-2",
        handoff_api_token="api-3",
        github_webhook_secret="old-4, new-5",
        github_client_secret="client-6",
    )
    assert set(settings.secret_values()) >= {"xoxb-1", "sk-ant-2", "api-3", "client-6", "old-4", "new-5"}
    assert "old-4, new-5" in settings.secret_values()  # the whole setting, and each secret in it
