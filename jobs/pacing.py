"""Token buckets for the outbox sender: which rate bucket may write now, and pauses a target asked for.

Each :class:`~core.outbox.RateRule` names a bucket holding up to ``burst`` tokens that refill at one
per ``interval_s``; a write takes one token from every bucket of its rules, and may go only when
each has one (more than its ``reserve``, for a rule that leaves some to others). A target's ``Retry-After`` holds whole buckets until a time. Times are the event
loop's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.outbox import RateRule


@dataclass
class _Bucket:
    tokens: float
    at: float  # when ``tokens`` was last brought up to date
    held_until: float = 0.0


class Pacing:
    """The state of every rate bucket the sender has written through."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, rule: RateRule, now: float) -> _Bucket:
        bucket = self._buckets.get(rule.bucket)
        if bucket is None:
            bucket = self._buckets[rule.bucket] = _Bucket(float(rule.burst), now)
        elif rule.interval_s > 0:
            refill = max(0.0, now - bucket.at) / rule.interval_s
            bucket.tokens = min(float(rule.burst), bucket.tokens + refill)
        else:
            bucket.tokens = float(rule.burst)
        bucket.at = now
        return bucket

    def ready(self, rules: Sequence[RateRule], now: float) -> bool:
        """Whether a write under ``rules`` may go at ``now``."""
        for rule in rules:
            bucket = self._bucket(rule, now)
            if bucket.held_until > now or bucket.tokens < 1.0 + rule.reserve:
                return False
        return True

    def take(self, rules: Sequence[RateRule], now: float) -> None:
        """Count a write under ``rules`` at ``now``."""
        for rule in rules:
            self._bucket(rule, now).tokens -= 1.0

    def hold(self, rules: Sequence[RateRule], until: float) -> None:
        """No write in the buckets of ``rules`` before ``until`` (a target asked us to wait)."""
        for rule in rules:
            bucket = self._buckets.setdefault(rule.bucket, _Bucket(float(rule.burst), until))
            bucket.held_until = max(bucket.held_until, until)

    def reset(self, bucket: str) -> None:
        """Forget ``bucket`` (its next write may go at once)."""
        self._buckets.pop(bucket, None)
