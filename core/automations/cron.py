"""Cron expressions of automation schedules, parsed into the field sets arq's ``cron`` takes.

Five fields, ``minute hour day month weekday`` (``0 3 * * 1-5``), each ``*``, a number, a range
``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of those; months and weekdays also by name
(``jan``, ``mon-fri``); weekday 0 and 7 are Sunday. A sixth, leading field gives seconds
(``*/10 * * * * *``). Times are the server's local time zone, as arq's scheduler uses it.

arq matches every field (AND), where classic cron ORs day-of-month and weekday when both are set:
a schedule restricting both is refused rather than run on days its author did not mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_PART = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


@dataclass(frozen=True)
class CronFields:
    """The sets a schedule fires on (``None``: every value). ``weekday`` counts Monday as 0, as
    Python and arq do."""

    second: frozenset[int]
    minute: frozenset[int] | None
    hour: frozenset[int] | None
    day: frozenset[int] | None
    month: frozenset[int] | None
    weekday: frozenset[int] | None


def _value(text: str, low: int, high: int, names: dict[str, int] | None) -> int:
    if names is not None and text in names:
        return names[text]
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}-{high}")
    return value


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int] | None:
    """The values of one field, or ``None`` for ``*``."""
    if text == "*":
        return None
    values: set[int] = set()
    for part in text.lower().split(","):
        match = _PART.match(part)
        if match is None:
            raise ValueError(f"{part!r} is not a cron field")
        span, step_text = match.group(1), match.group(2)
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step} must be at least 1")
        if span == "*":
            start, end = low, high
        elif "-" in span:
            first, _, last = span.partition("-")
            start, end = _value(first, low, high, names), _value(last, low, high, names)
            if start > end:
                raise ValueError(f"range {span} runs backwards")
        else:
            start = _value(span, low, high, names)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(expression: str) -> CronFields:
    """The field sets of ``expression``; ``ValueError`` says what is wrong."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"{expression!r}: want 5 fields (minute hour day month weekday), or 6 with seconds first"
        )
    seconds = _field(fields[0], 0, 59) if len(fields) == 6 else frozenset({0})
    minute, hour, day, month, weekday = fields[-5:]
    parsed_day = _field(day, 1, 31)
    parsed_weekday = _field(weekday, 0, 7, _DAYS)
    if parsed_day is not None and parsed_weekday is not None:
        raise ValueError(
            f"{expression!r}: restrict the day of the month or the weekday, not both "
            "(cron would fire on either, this scheduler only on days matching both)"
        )
    return CronFields(
        second=seconds if seconds is not None else frozenset(range(60)),
        minute=_field(minute, 0, 59),
        hour=_field(hour, 0, 23),
        day=parsed_day,
        month=_field(month, 1, 12, _MONTHS),
        # cron: 0 (and 7) is Sunday; Python: Monday is 0, Sunday 6.
        weekday=None if parsed_weekday is None else frozenset((d - 1) % 7 for d in parsed_weekday),
    )
