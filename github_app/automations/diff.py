"""A pull request's files as a review needs them: the diff text for the agent, and the
:class:`~core.review.DiffMap` of lines an inline comment may be on.

Both come from ``GET /repos/{o}/{r}/pulls/{n}/files`` at the moment the rule fires, so the agent
reviews exactly the diff its comments are later placed on (the head commit it names).
"""

from __future__ import annotations

import re
from typing import Any

from core.review import DiffMap, clean_path

MAX_DIFF_CHARS = 60_000
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.MULTILINE)


def diff_map(files: list[dict[str, Any]]) -> DiffMap:
    """The commentable line ranges of each changed file (files without a patch have none)."""
    right: dict[str, list[tuple[int, int]]] = {}
    left: dict[str, list[tuple[int, int]]] = {}
    for entry in files:
        path = clean_path(entry.get("filename"))
        patch = entry.get("patch")
        if path is None or not isinstance(patch, str):
            continue
        for match in _HUNK.finditer(patch):
            old_start, old_len = int(match.group(1)), int(match.group(2) or 1)
            new_start, new_len = int(match.group(3)), int(match.group(4) or 1)
            if new_len:
                right.setdefault(path, []).append((new_start, new_start + new_len - 1))
            if old_len:
                left.setdefault(path, []).append((old_start, old_start + old_len - 1))
    return DiffMap(right=right, left=left)


def diff_text(files: list[dict[str, Any]], limit: int = MAX_DIFF_CHARS) -> str:
    """The unified diff of the pull request, cut at ``limit`` characters (saying which files are left out)."""
    parts: list[str] = []
    used = 0
    left_out: list[str] = []
    for entry in files:
        name = str(entry.get("filename") or "?")
        status = str(entry.get("status") or "modified")
        patch = entry.get("patch")
        head = f"diff --git a/{entry.get('previous_filename') or name} b/{name} ({status})\n"
        body = patch if isinstance(patch, str) else "(no textual diff: binary or too large)"
        piece = head + body + "\n"
        if used + len(piece) > limit:
            left_out.append(name)
            continue
        parts.append(piece)
        used += len(piece)
    if left_out:
        parts.append(f"(diff too long: {len(left_out)} file(s) left out: {', '.join(left_out[:50])})\n")
    return "".join(parts)


def changed_paths(files: list[dict[str, Any]]) -> list[str]:
    """The head-side paths the pull request touches (renames count under both names)."""
    paths: list[str] = []
    for entry in files:
        for key in ("filename", "previous_filename"):
            value = entry.get(key)
            if isinstance(value, str) and value:
                paths.append(value)
    return paths
