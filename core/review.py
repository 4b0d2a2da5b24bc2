"""Review findings: what a review-mode agent reports, checked as the untrusted data it is.

An agent reports findings through the built-in agent's ``report_findings`` tool or as the
``findings`` of a ``result`` event (a CLI may also end its summary with a fenced
``handoff-findings`` JSON block). Whatever the source, :func:`parse_findings` is the one gate:
at most :data:`MAX_FINDINGS`, every text bounded, paths relative and inside the repository, lines
positive, severities from a fixed set — anything else is dropped and counted. Handoff alone then
decides where each finding goes (:class:`DiffMap`): an inline comment on a line the pull request
changes, or the summary. A finding is content Handoff posts after checking it, never an instruction.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

MAX_FINDINGS = 100
MAX_BODY = 4000
MAX_SUGGESTION = 4000
MAX_TITLE = 200
MAX_PATH = 500
MAX_LINE = 1_000_000
Severity = Literal["error", "warning", "info"]
_SEVERITY: dict[str, Severity] = {
    "critical": "error",
    "blocker": "error",
    "high": "error",
    "error": "error",
    "failure": "error",
    "major": "warning",
    "medium": "warning",
    "warning": "warning",
    "warn": "warning",
}
_FENCE = re.compile(r"```handoff-findings\s*\n(.*?)\n```", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class Finding(BaseModel):
    """One checked finding: a place on the head commit, a severity and what to say."""

    model_config = ConfigDict(frozen=True)

    path: str
    line: int
    start_line: int | None = None
    side: Literal["RIGHT", "LEFT"] = "RIGHT"
    severity: Severity = "info"
    title: str = ""
    body: str
    suggestion: str | None = None

    @property
    def first(self) -> int:
        """The first line it covers."""
        return self.start_line if self.start_line is not None else self.line

    @property
    def fingerprint(self) -> str:
        """Identifies the same finding across pushes (place-independent: a line may move)."""
        text = re.sub(r"\s+", " ", f"{self.path}|{self.title}|{self.body}".lower()).strip()
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Findings:
    """Checked findings, and how many reported ones were dropped (and why)."""

    items: list[Finding] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _text(value: Any, limit: int, *, code: bool = False) -> str:
    """``value`` without control characters, bounded; ``code`` keeps its indentation."""
    if not isinstance(value, str):
        return ""
    cleaned = _CONTROL.sub("", unicodedata.normalize("NFC", value))
    cleaned = cleaned.strip("\n") if code else cleaned.strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= MAX_LINE else None
    if isinstance(value, str) and value.strip().isdigit():
        return _int(int(value.strip()))
    return None


def clean_path(value: Any) -> str | None:
    """A repository-relative path, or ``None`` when it is not one (absolute, ``..``, empty)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_PATH:
        return None
    path = value.strip().removeprefix("./")
    if _CONTROL.search(path) or path.startswith("/") or "\\" in path:
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        return None
    return path


def parse_findings(raw: Any) -> Findings:
    """Check what an agent reported (any JSON value) into at most :data:`MAX_FINDINGS` findings."""
    found = Findings()
    if not isinstance(raw, list):
        if raw is not None:
            found.dropped.append("findings were not a list")
        return found
    for i, entry in enumerate(raw):
        if len(found.items) >= MAX_FINDINGS:
            found.dropped.append(f"{len(raw) - i} findings past the first {MAX_FINDINGS}")
            break
        finding = _finding(entry)
        if isinstance(finding, str):
            found.dropped.append(f"finding {i + 1}: {finding}")
        else:
            found.items.append(finding)
    return found


def _finding(entry: Any) -> Finding | str:
    if not isinstance(entry, dict):
        return "not an object"
    path = clean_path(entry.get("path") or entry.get("file"))
    if path is None:
        return "no repository-relative path"
    end = _int(entry.get("end_line")) or _int(entry.get("line"))
    start = _int(entry.get("start_line")) or _int(entry.get("line"))
    if end is None:
        return "no line"
    start = start if start is not None and start < end else None
    body = _text(entry.get("body") or entry.get("message"), MAX_BODY)
    if not body:
        return "no body"
    severity = _SEVERITY.get(str(entry.get("severity") or "").strip().lower(), "info")
    suggestion = entry.get("suggestion")
    side = "LEFT" if str(entry.get("side") or "").upper() == "LEFT" else "RIGHT"
    return Finding(
        path=path,
        line=end,
        start_line=start,
        side=side,
        severity=severity,
        title=_text(entry.get("title"), MAX_TITLE),
        body=body,
        # A suggestion replaces lines as written: its indentation is kept.
        suggestion=(_text(suggestion, MAX_SUGGESTION, code=True) or None)
        if isinstance(suggestion, str)
        else None,
    )


def findings_in_text(text: str | None) -> Any:
    """The JSON of the last ``handoff-findings`` fenced block in ``text``, if any (CLI agents)."""
    if not text:
        return None
    blocks = _FENCE.findall(text)
    if not blocks:
        return None
    try:
        value = json.loads(blocks[-1])
    except ValueError:
        return None
    if isinstance(value, dict):
        return value.get("findings")
    return value


@dataclass(frozen=True)
class Placement:
    """Where a finding goes: an inline comment (``line``/``start_line`` on ``side``) or the summary."""

    finding: Finding
    inline: bool
    line: int = 0
    start_line: int | None = None


class DiffMap(BaseModel):
    """The lines of the head commit (RIGHT) and the base (LEFT) a review comment may be on: per
    file, the ranges of each hunk (GitHub refuses a whole review with one comment elsewhere)."""

    model_config = ConfigDict(frozen=True)

    right: dict[str, list[tuple[int, int]]] = {}
    left: dict[str, list[tuple[int, int]]] = {}

    def place(self, finding: Finding) -> Placement:
        """Where ``finding`` can be shown: inline when its lines are in one hunk of the diff."""
        ranges = (self.left if finding.side == "LEFT" else self.right).get(finding.path, [])
        hunk_of_end = next((r for r in ranges if r[0] <= finding.line <= r[1]), None)
        hunk_of_start = next((r for r in ranges if r[0] <= finding.first <= r[1]), None)
        if hunk_of_end is not None:
            start = finding.start_line if hunk_of_start == hunk_of_end else None
            return Placement(finding, True, finding.line, start)
        if hunk_of_start is not None:
            return Placement(finding, True, finding.first, None)
        return Placement(finding, False)
