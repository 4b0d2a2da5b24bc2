"""Which of a worker's dependencies answer, and since when: the gate in front of job intake.

A worker needs Redis (the queue), the database (every job reads and writes it) and, for runs,
Docker. When one of them goes away the worker must neither exit nor take jobs it cannot do:
:class:`DependencyGate` probes each dependency in the background (every ``interval_s`` while it
answers, with exponential backoff up to ``max_backoff_s`` while it does not), is told at once when
a caller saw one fail (:meth:`DependencyGate.lost`), logs one line when a dependency goes and one
when it returns — and, while it stays away, a line every ``log_every_s`` — and answers the
questions the worker asks before taking a job: :meth:`intake_open` (Redis and the database answer)
and :meth:`runs_open` (Docker too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

REDIS = "redis"
DATABASE = "database"
DOCKER = "docker"

Probe = Callable[[], Awaitable[object]]


@dataclass
class _State:
    """What the gate knows of one dependency."""

    up: bool = True
    changed_at: float = 0.0  # loop time of the last change between up and down
    error: str = ""
    next_probe: float = 0.0
    backoff_s: float = 0.0
    logged_at: float = 0.0


class DependencyGate:
    """Tracks whether each dependency answers; the worker's intake waits on it."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        *,
        interval_s: float = 2.0,
        min_backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        log_every_s: float = 5.0,
        probe_timeout_s: float = 3.0,
    ) -> None:
        self.probes = dict(probes)
        self.interval_s = interval_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.log_every_s = log_every_s
        self.probe_timeout_s = probe_timeout_s
        self._states = {name: _State() for name in self.probes}
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        # Outages seen so far, per dependency (tests and metrics read it).
        self.outages: dict[str, int] = dict.fromkeys(self.probes, 0)

    # -- questions ------------------------------------------------------------------------------

    def is_up(self, name: str) -> bool:
        """Whether ``name`` answered last time it was asked (unknown names count as up)."""
        state = self._states.get(name)
        return state is None or state.up

    def up_for(self, name: str) -> float:
        """Seconds ``name`` has answered without a break (0 while it does not)."""
        state = self._states.get(name)
        if state is None:
            return float("inf")
        if not state.up:
            return 0.0
        if state.changed_at == 0.0:
            return float("inf")  # never seen down in this process
        return _now() - state.changed_at

    def intake_open(self) -> bool:
        """Jobs may be taken: Redis and the database answer."""
        return self.is_up(REDIS) and self.is_up(DATABASE)

    def runs_open(self) -> bool:
        """Runs may be taken: Redis, the database and Docker answer."""
        return self.intake_open() and self.is_up(DOCKER)

    def down(self) -> dict[str, str]:
        """The dependencies that do not answer now, with their last error."""
        return {name: s.error for name, s in self._states.items() if not s.up}

    async def wait_until_up(self, *names: str) -> None:
        """Return once every dependency in ``names`` answers."""
        while not all(self.is_up(n) for n in names):
            self._changed.clear()
            if all(self.is_up(n) for n in names):
                return
            await self._changed.wait()

    # -- news from callers ------------------------------------------------------------------------

    def lost(self, name: str, exc: BaseException | str) -> None:
        """A caller saw ``name`` fail: count it down now and probe it soon."""
        state = self._states.get(name)
        if state is None:
            return
        if state.up:
            self._mark_down(name, state, describe(exc))
        self._wake.set()

    # -- the monitor ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Probe the dependencies until cancelled."""
        if not self._states:
            await asyncio.Event().wait()  # nothing to watch
        while True:
            now = _now()
            due = [name for name, s in self._states.items() if s.next_probe <= now]
            if due:
                await asyncio.gather(*(self._probe(name) for name in due))
            next_at = min(s.next_probe for s in self._states.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, next_at - _now()))
            self._wake.clear()

    async def _probe(self, name: str) -> None:
        state = self._states[name]
        try:
            await asyncio.wait_for(self.probes[name](), self.probe_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure of a probe means "does not answer"
            now = _now()
            if state.up:
                self._mark_down(name, state, describe(exc))
            else:
                state.error = describe(exc)
                if now - state.logged_at >= self.log_every_s:
                    state.logged_at = now
                    log.warning(
                        "%s still unavailable after %.0f s (%s); %s",
                        name,
                        now - state.changed_at,
                        state.error,
                        self._paused_what(),
                    )
            state.backoff_s = min(self.max_backoff_s, max(self.min_backoff_s, state.backoff_s * 2))
            state.next_probe = _now() + state.backoff_s
            return
        now = _now()
        if not state.up:
            state.up = True
            log.warning("%s is back after %.1f s; %s", name, now - state.changed_at, self._resumed_what())
            state.changed_at = now
            state.error = ""
            self._changed.set()
        state.backoff_s = 0.0
        state.next_probe = now + self.interval_s

    def _mark_down(self, name: str, state: _State, error: str) -> None:
        now = _now()
        state.up = False
        state.changed_at = state.logged_at = now
        state.error = error
        state.backoff_s = self.min_backoff_s
        state.next_probe = now + self.min_backoff_s
        self.outages[name] = self.outages.get(name, 0) + 1
        self._changed.set()
        log.warning("%s unavailable (%s); %s until it answers", name, error, self._paused_what())

    def _paused_what(self) -> str:
        if not self.intake_open():
            return "job intake paused"
        if not self.runs_open():
            return "runs paused (other jobs continue)"
        return "nothing paused"

    def _resumed_what(self) -> str:
        if self.runs_open():
            return "job intake resumed"
        if self.intake_open():
            return "job intake resumed except runs"
        return "job intake still paused for " + ", ".join(self.down())


def describe(exc: BaseException | str) -> str:
    """One short line for a log: the error's type and the first line of its message."""
    if isinstance(exc, str):
        return exc
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _now() -> float:
    return asyncio.get_running_loop().time()
