"""What outside text and numbers must satisfy before they reach the database.

PostgreSQL refuses NUL in text, and an unpaired surrogate (which JSON's ``\\ud800`` escapes can
produce) cannot be encoded as UTF-8 at all: such a value must be refused where it enters, with an
error naming the field, never found out by the database as a 500. Numbers and times that the
database or Python's ``datetime`` cannot hold are bounded the same way.

:func:`check_text` is the one rule (the task service calls it for every task it creates);
:data:`SafeText`, :data:`SafeTime` and the bounds are its forms for pydantic models and query
parameters at the edges.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

from core.errors import InvalidInput

_UNSAFE = re.compile("[\x00\ud800-\udfff]")

# Bounds of numbers that come from outside: large enough for any real use, small enough for an
# OFFSET, a 32-bit sequence column, or a C long.
MAX_OFFSET = 1_000_000_000
MAX_SEQ = 2**31 - 1


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or ``None`` when it can."""
    found = _UNSAFE.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters"
    return "must not contain unpaired surrogates (it is not valid Unicode)"


def check_text(field: str, value: str | None) -> None:
    """Raise :class:`InvalidInput` naming ``field`` unless ``value`` can be stored as text."""
    if value is None:
        return
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput(field, problem)


def _safe_text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _safe_time(value: datetime) -> datetime:
    """As UTC; a time that only exists beyond years 1 to 9999 once converted is out of range."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


SafeText = Annotated[str, AfterValidator(_safe_text)]
"""A string that can be stored as text (no NUL, no unpaired surrogate)."""

SafeTime = Annotated[datetime, AfterValidator(_safe_time)]
"""A timestamp that converts to UTC within ``datetime``'s range (naive means UTC)."""
