"""Block Kit builders that cannot produce a message Slack would reject.

Slack rejects a message with ``invalid_blocks`` (more than 50 blocks, a section over 3,000
characters, a button label over 75, ...) or ``msg_too_long``; it would rather be shortened than
lost. Every builder here clips to the limit, long text is split over several sections, and
:func:`fit_message` re-checks a whole message before it is sent. Lengths are counted in UTF-16
code units, as Slack's servers do, so emoji never push a "3,000-character" section over.

Untrusted text (instructions, agent output) goes through :func:`escape` first: a raw ``<!channel>``
from an agent must not ping a whole channel.
"""

from __future__ import annotations

import re
from typing import Any

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_HEADER = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
MAX_ACTIONS = 25
MAX_TEXT = 40_000
# The top-level ``text`` we send is only the notification preview: keep it short.
MAX_FALLBACK = 3000
CUT = "…"

Block = dict[str, Any]


def slack_len(text: str) -> int:
    """Length as Slack counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """Escape the three characters mrkdwn treats as markup (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,4}$")


def clip(text: str, limit: int, marker: str = CUT) -> str:
    """``text`` cut to ``limit`` UTF-16 units (marker included), never mid-entity or mid-pair."""
    if slack_len(text) <= limit:
        return text
    budget = max(limit - slack_len(marker), 0)
    # Code points are 1 or 2 units: cut by code points, then back off while still too long.
    cut = text[:budget]
    while cut and slack_len(cut) > budget:
        cut = cut[:-1]
    cut = _PARTIAL_ENTITY.sub("", cut)
    return cut + marker


def clip_start(text: str, limit: int, marker: str = CUT) -> str:
    """Like :func:`clip`, but keeps the end of ``text`` (the latest lines of a log)."""
    if slack_len(text) <= limit:
        return text
    budget = max(limit - slack_len(marker), 0)
    cut = text[-budget:] if budget else ""
    while cut and slack_len(cut) > budget:
        cut = cut[1:]
    cut = re.sub(r"^[a-z]{0,4};", "", cut)  # the rest of an entity whose "&" was cut off
    return marker + cut


def mrkdwn(text: str, limit: int = MAX_SECTION) -> dict[str, Any]:
    """A mrkdwn text object within ``limit``."""
    return {"type": "mrkdwn", "text": clip(text, limit) or " "}


def section(text: str) -> Block:
    """One section of at most 3,000 characters (clipped)."""
    return {"type": "section", "text": mrkdwn(text)}


def split_text(text: str, limit: int = MAX_SECTION) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` units, at line breaks where possible."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if slack_len(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        # A single line longer than a section is cut into section-sized chunks.
        while slack_len(line) > limit:
            head = clip(line, limit, marker="")
            head = _PARTIAL_ENTITY.sub("", head) or line[:1]
            pieces.append(head)
            line = line[len(head) :]
        current = line
    if current or not pieces:
        pieces.append(current)
    return pieces


def sections(text: str, max_blocks: int) -> list[Block]:
    """``text`` over as many sections as needed, at most ``max_blocks`` (the last one says so)."""
    pieces = split_text(text, MAX_SECTION)
    if len(pieces) > max_blocks:
        pieces = pieces[:max_blocks]
        pieces[-1] = clip(pieces[-1], MAX_SECTION - 40) + "\n_(cut: too long for Slack)_"
    return [section(p) for p in pieces]


def code_block(lines: list[str], limit: int = MAX_SECTION) -> str:
    """The last ``lines`` as a code block that fits one section (older lines dropped first)."""
    fence = "```"
    # One giant line must not push every other line out: each line gets a share of the room.
    per_line = max(limit // max(len(lines), 1), 200)
    body = "\n".join(clip(escape(line).replace(fence, "'''"), per_line) for line in lines)
    inner = clip_start(body, limit - 2 * len(fence) - 2)
    return f"{fence}\n{inner}\n{fence}"


def context(*parts: str) -> Block:
    """A context block: small grey text, at most 10 elements."""
    elements = [mrkdwn(p) for p in parts if p][:MAX_CONTEXT_ELEMENTS]
    return {"type": "context", "elements": elements or [mrkdwn(" ")]}


def button(
    text: str, action_id: str, *, value: str | None = None, url: str | None = None, style: str | None = None
) -> dict[str, Any]:
    """A button; a ``url`` button opens the page and still sends a ``block_actions`` payload."""
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": clip(text, MAX_BUTTON_TEXT), "emoji": True},
        "action_id": action_id[:255],
    }
    if value is not None:
        element["value"] = value[:MAX_BUTTON_VALUE]
    if url is not None:
        element["url"] = url[:MAX_URL]
    if style in ("primary", "danger"):
        element["style"] = style
    return element


def actions(*elements: dict[str, Any], block_id: str | None = None) -> Block:
    """An actions block with at most 25 elements."""
    block: Block = {"type": "actions", "elements": list(elements)[:MAX_ACTIONS]}
    if block_id:
        block["block_id"] = block_id[:255]
    return block


def _fit_block(block: Block) -> Block:
    kind = block.get("type")
    if kind == "section":
        fitted = dict(block)
        if "text" in block:
            fitted["text"] = {**block["text"], "text": clip(block["text"]["text"], MAX_SECTION) or " "}
        if "fields" in block:
            fitted["fields"] = [{**f, "text": clip(f["text"], MAX_FIELD)} for f in block["fields"][:10]]
        return fitted
    if kind == "context":
        elements = [
            {**e, "text": clip(e["text"], MAX_SECTION)} if "text" in e else e
            for e in block.get("elements", [])[:MAX_CONTEXT_ELEMENTS]
        ]
        return {**block, "elements": elements}
    if kind == "header":
        return {**block, "text": {**block["text"], "text": clip(block["text"]["text"], MAX_HEADER)}}
    if kind == "actions":
        return {**block, "elements": block.get("elements", [])[:MAX_ACTIONS]}
    return block


def fit_message(text: str, blocks: list[Block]) -> tuple[str, list[Block]]:
    """The last line of defence: any message is brought within Slack's limits before sending.

    More than 50 blocks keeps the first 48, a note, and the last block (the buttons).
    """
    fitted = [_fit_block(b) for b in blocks]
    if len(fitted) > MAX_BLOCKS:
        fitted = [*fitted[: MAX_BLOCKS - 2], context("_(some of this message was cut)_"), fitted[-1]]
    return clip(text, MAX_FALLBACK) or " ", fitted
