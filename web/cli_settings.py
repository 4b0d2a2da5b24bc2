"""What every ``handoff`` subcommand shares: the settings it runs with, and failing in one line.

Every failure is one readable line on stderr (never raw JSON or a traceback); text from a task, its
agent or the API is printed with no markup and no control codes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape as escape_markup

from core.errors import ConfigError
from core.settings import Settings, load_settings

err = Console(stderr=True, highlight=False)
LOCAL_CONFIG = Path("handoff.yml")
# C0 controls but tab and newline, DEL and C1: ESC alone lets printed text retitle the terminal,
# rewrite the clipboard (OSC 52) or forge earlier lines.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape(text: str) -> str:
    """Text from a task, its agent or the API, safe to print: no rich markup, no control codes."""
    return escape_markup(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as one red line on stderr and exit with ``code``."""
    err.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    raise typer.Exit(code)


def load_cli_settings() -> Settings:
    """Settings and handoff.yml, validated now; a bad value exits 2 with one line naming it.

    Without HANDOFF_CONFIG, ``./handoff.yml`` is used when it exists.
    """
    from core.config import load_config

    try:
        settings = load_settings()
        if settings.handoff_config is None and "HANDOFF_CONFIG" not in os.environ and LOCAL_CONFIG.is_file():
            settings = settings.model_copy(update={"handoff_config": LOCAL_CONFIG.resolve()})
        load_config(settings.handoff_config)
    except ConfigError as exc:
        fail(str(exc), 2)
    return settings
