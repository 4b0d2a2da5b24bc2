"""Following a container's output: byte streams split into lines, delivered on the event loop.

The docker SDK is blocking and a ``logs(follow=True)`` read can block for the whole run, so each
stream is followed in a dedicated daemon thread (not the loop's small default executor, which the
``kill`` enforcing the deadline needs). stdout and stderr are two separate streams, each with its
own line buffer, so a JSON event written to stdout is never spliced with stderr bytes that arrive
mid-line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import docker
import docker.errors

log = logging.getLogger(__name__)

#: A longer line is cut to this many bytes so a runaway writer cannot exhaust the worker's memory.
MAX_LINE = 1 << 20
#: Line batches handed to the loop but not yet delivered; a reader blocks past this (backpressure).
_MAX_PENDING_BATCHES = 256


class LineSplitter:
    """Split a byte stream into text lines, across chunk boundaries, cutting overlong lines."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._max = max_line
        self._skipping = False  # inside an overlong line whose head was already emitted

    def feed(self, chunk: bytes) -> list[str]:
        """Add ``chunk`` and return the lines it completes (without their newline)."""
        out: list[str] = []
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            if self._skipping:
                self._skipping = False  # the tail of a cut line: drop it
            else:
                self._buf += chunk[start:nl]
                out.append(_decode(self._buf[: self._max]))
                self._buf.clear()
            start = nl + 1
        if start < len(chunk) and not self._skipping:
            self._buf += chunk[start:]
            if len(self._buf) > self._max:
                # Emit the head now instead of buffering until a newline that may never come.
                out.append(_decode(self._buf[: self._max]))
                self._buf.clear()
                self._skipping = True
        return out

    @property
    def pending(self) -> bytes | None:
        """The unterminated bytes held so far; None inside an overlong line (already emitted)."""
        return None if self._skipping else bytes(self._buf)

    def flush(self) -> list[str]:
        """Return the last, unterminated line, if any."""
        rest = [] if self._skipping or not self._buf else [_decode(self._buf)]
        self._buf.clear()
        self._skipping = False
        return rest


def _decode(raw: bytes | bytearray) -> str:
    text = raw.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\r") else text


class LogReader:
    """Follows one output stream of a container in a daemon thread and feeds lines to the loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, container: Any, stderr: bool, on_line: Callable[[str], None]
    ):
        self._loop = loop
        self._container = container
        self._stderr = stderr
        self._on_line = on_line
        self._pending = threading.BoundedSemaphore(_MAX_PENDING_BATCHES)
        self._stop = threading.Event()
        self._stream: Any = None
        self.done: asyncio.Future[None] = loop.create_future()
        name = f"handoff-logs-{container.short_id}-{'err' if stderr else 'out'}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def close(self) -> None:
        """Stop reading now (closes the HTTP stream, which unblocks the thread)."""
        self._stop.set()
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._stream = self._container.logs(
                stdout=not self._stderr, stderr=self._stderr, stream=True, follow=True
            )
            splitter = LineSplitter()
            consumed = 0
            for chunk in self._stream:
                consumed += len(chunk)
                if self._stop.is_set() or not self._emit(splitter.feed(chunk)):
                    return
            self._catch_up(splitter, consumed)
            self._emit(splitter.flush())
        except Exception as exc:  # reported to the awaiting coroutine, not lost in a thread
            error = exc if not self._stop.is_set() else None
        finally:
            if self._stream is not None:
                with contextlib.suppress(Exception):
                    self._stream.close()
            self._finish(error)

    def _catch_up(self, splitter: LineSplitter, consumed: int) -> None:
        # dockerd 20.10's json-file follower can end the stream when the container exits before
        # it has sent everything (a fast writer loses whole lines, a final line without newline
        # always). The stored log still has it all: read it once more without following and feed
        # what comes after the bytes already seen.
        if self._stop.is_set():
            return
        try:
            rest = self._container.logs(
                stdout=not self._stderr, stderr=self._stderr, stream=True, follow=False
            )
            skip = consumed
            for chunk in rest:
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                    if not chunk:
                        continue
                if self._stop.is_set() or not self._emit(splitter.feed(chunk)):
                    return
        except docker.errors.APIError:  # best effort: the container may be gone already
            return

    def _emit(self, lines: list[str]) -> bool:
        if not lines:
            return True
        while not self._pending.acquire(timeout=0.5):
            if self._stop.is_set():
                return False
        try:
            self._loop.call_soon_threadsafe(self._deliver, lines)
        except RuntimeError:  # the loop is closed: nobody listens any more
            return False
        return True

    def _deliver(self, lines: list[str]) -> None:
        try:
            for line in lines:
                try:
                    self._on_line(line)
                except Exception:  # a consumer bug must not stop the stream or leak the semaphore
                    log.exception("on_line callback failed")
        finally:
            self._pending.release()

    def _finish(self, error: BaseException | None) -> None:
        def settle() -> None:
            if self.done.done():
                return
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(settle)
