"""The command lines: ``handoff`` run as a real process, and the real agent CLIs' profiles (their
images come from the ``agent_images`` fixture in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from core.config import load_config

ROOT = Path(__file__).resolve().parent.parent.parent


async def handoff(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path = ROOT
) -> tuple[int, str]:
    """Run ``python -m web ARGS`` and return (exit code, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "web",
        *args,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode()


EXAMPLES = ROOT / "examples" / "handoff.yml"
LIMITS = {"memory": "1g", "pids": 256, "cpus": 1.0, "timeout_s": 180, "tmpfs_size": "256m"}
MODEL = {"claude-code": "claude-test", "codex": "gpt-test"}


def cli_profile(name: str, **overrides: Any) -> dict[str, Any]:
    """The example profile of CLI ``name``, on the test's model names and limits."""
    profile = load_config(EXAMPLES).profiles[name].model_dump(exclude_none=True)
    model = MODEL[name]
    profile.update(model=model, models=[model], limits=LIMITS)
    if "env" in profile:
        profile["env"] = {k: model for k in profile["env"]}  # Claude Code's small model, too
    profile.update(overrides)
    return profile
