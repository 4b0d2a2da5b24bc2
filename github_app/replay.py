"""``handoff replay <payload.json> [--event X]``: sign and post a recorded payload (like ``probot receive``).

The event name comes from ``--event``, else from the file name (``issue_comment.created.json``,
``issues-labeled.json``), else from the payload's shape. Each replay gets a fresh delivery GUID
unless one is given, so replaying the same file twice exercises the dedupe only when asked to.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx

from github_app.signature import HEADER, sign

# Payload keys that identify an event, most specific first.
_SHAPES = [
    ("requested_action", "check_run"),
    ("check_run", "check_run"),
    ("review", "pull_request_review"),
    ("repositories_removed", "installation_repositories"),
    ("repositories_added", "installation_repositories"),
    ("zen", "ping"),
    ("check_suite", "check_suite"),
    ("workflow_run", "workflow_run"),
    ("pusher", "push"),
]
KNOWN = {
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "check_run",
    "installation",
    "installation_repositories",
    "ping",
    "check_suite",
    "workflow_run",
    "push",
}


def infer_event(path: Path, payload: Any) -> str:
    """The event name for ``payload`` read from ``path``; raise ``ValueError`` if it cannot be told."""
    stem = re.split(r"[.\-]", path.name)[0]
    if stem in KNOWN:
        return stem
    if isinstance(payload, dict):
        for key, event in _SHAPES:
            if key in payload:
                return event
        if "comment" in payload:
            return "pull_request_review_comment" if "pull_request" in payload else "issue_comment"
        for key in ("pull_request", "issue", "installation"):
            if key in payload and (key != "installation" or "repositories" in payload or len(payload) <= 4):
                return {"issue": "issues"}.get(key, key)
    raise ValueError("cannot tell the event from the file name or payload: pass --event")


def replay(
    url: str, payload_path: Path, secret: str, *, event: str | None = None, delivery: str | None = None
) -> httpx.Response:
    """Post ``payload_path`` to ``url`` signed with ``secret``, as GitHub would."""
    body = payload_path.read_bytes()
    payload = json.loads(body)
    name = event or infer_event(payload_path, payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/handoff-replay",
        "X-GitHub-Event": name,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "0",
        HEADER: sign(secret, body),
    }
    return httpx.post(url, content=body, headers=headers, timeout=30)
