"""A per-host cache of bare mirrors, so a run's checkout costs an incremental fetch and a local clone.

Layout under the cache directory (``HANDOFF_MIRROR_DIR``, default ``~/.local/share/handoff/mirrors``;
host-only — never inside the workspace directory, never mounted into a sandbox)::

    <key>.git         a bare mirror of one remote (``key`` hashes the URL, credentials removed)
    <key>.use.lock    held shared (``flock``) by every run using the mirror
    <key>.fetch.lock  held exclusively while the mirror is created or fetched

A run leases a mirror (:meth:`MirrorCache.lease`): it takes the shared "use" lock, then under the
exclusive "fetch" lock the mirror is created (cloned into a temporary directory and renamed, so a
crash never leaves half a mirror) or fetched (``+refs/heads/*``, pruned); it keeps the "use" lock
until it ends, its own repository borrowing the mirror's objects (``git clone --shared``). Fetching
only ever adds objects, and nothing here prunes unreachable ones, so a run's borrowed objects never
vanish under it. Eviction (least recently used first, until the cache fits ``max_bytes``) takes a
mirror only when it can take both locks exclusively without waiting — when no run holds it. A
mirror git cannot fetch into (a crash left a ref lock behind, a corrupt pack) is thrown away and
cloned again. ``flock`` locks are released by the kernel when a process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import WorkspaceError
from jobs.hostgit import GitOut, git_env, protocol_config, redact_url, run_git, verb

log = logging.getLogger(__name__)
_STAMP = "handoff-last-used"
# A mirror used this recently is never evicted, even when no lease holds it at this instant.
_RECENT_S = 60.0


def mirror_key(remote: str) -> str:
    """A file name for ``remote``'s mirror: readable, unique, free of credentials."""
    clean = redact_url(remote).rstrip("/")
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", clean.rsplit("/", 1)[-1]).removesuffix(".git")[:40] or "repo"
    return f"{tail}-{hashlib.sha256(clean.encode()).hexdigest()[:16]}"


@dataclass
class Lease:
    """A mirror held (its "use" lock, shared) by one run; :meth:`release` when the run's
    repository is gone."""

    path: Path
    _fd: int | None

    def release(self) -> None:
        """Let go of the mirror (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops its flock
            self._fd = None


class MirrorCache:
    """Bare mirrors of remotes on this host, shared by runs and bounded in size."""

    def __init__(self, root: Path, *, max_bytes: int, timeout_s: float = 1800.0) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def lease(self, remote: str, auth_header: str | None) -> Lease:
        """Bring ``remote``'s mirror up to date and hold it for one run (see the module docstring)."""
        await asyncio.to_thread(self._ensure_root)
        key = mirror_key(remote)
        mirror = self.root / f"{key}.git"
        use = self._lock_fd(key, "use")
        try:
            # Shared "in use" first (eviction needs it exclusively), then the fetch lock.
            await asyncio.to_thread(fcntl.flock, use, fcntl.LOCK_SH)
            fetch = self._lock_fd(key, "fetch")
            try:
                await asyncio.to_thread(fcntl.flock, fetch, fcntl.LOCK_EX)
                await self._refresh(mirror, remote, auth_header)
                (mirror / _STAMP).touch()
            finally:
                os.close(fetch)
        except BaseException:
            os.close(use)
            raise
        lease = Lease(mirror, use)
        try:
            await asyncio.to_thread(self.evict, keep=mirror)
        except OSError as exc:  # eviction is housekeeping: never fail a run for it
            log.warning("mirror eviction failed: %s", exc)
        return lease

    def _lock_fd(self, key: str, kind: str) -> int:
        return os.open(self.root / f"{key}.{kind}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def _refresh(self, mirror: Path, remote: str, auth_header: str | None) -> None:
        if (mirror / "HEAD").is_file():
            fetched = await self._git(
                remote, auth_header, "--git-dir", str(mirror), "fetch", "-q", "--prune", "--no-tags",
                "--", remote, "+refs/heads/*:refs/heads/*",
            )  # fmt: skip
            if fetched.rc == 0:
                await self._tidy(mirror)
                return
            log.warning(
                "mirror %s could not be fetched (%s); cloning it again", mirror.name, fetched.stderr[-200:]
            )
            await asyncio.to_thread(shutil.rmtree, mirror, True)
        fresh = self.root / f"{mirror.stem}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        cloned = await self._git(
            remote, auth_header, "clone", "--bare", "-q", "--no-tags", "--", remote, str(fresh)
        )
        if cloned.rc != 0:
            await asyncio.to_thread(shutil.rmtree, fresh, True)
            raise WorkspaceError(f"clone of {redact_url(remote)} failed: {_reason(cloned.stderr)}")
        await asyncio.to_thread(os.rename, fresh, mirror)

    async def _tidy(self, mirror: Path) -> None:
        """Fold the small packs many fetches leave into fewer, never dropping an object."""
        packs = list((mirror / "objects" / "pack").glob("*.pack"))
        if len(packs) > 16:
            await self._git("", None, "--git-dir", str(mirror), "repack", "-d", "-q", "--geometric=2")

    async def _git(self, remote: str, auth_header: str | None, *args: str) -> GitOut:
        home = self.root / ".home"
        home.mkdir(exist_ok=True, mode=0o700)
        prefix = protocol_config(remote) if remote else ()
        env = git_env(home, self.root, auth_header if remote else None)
        try:
            return await run_git([*prefix, *args], env=env, cwd=self.root, timeout_s=self.timeout_s)
        except WorkspaceError as exc:
            return GitOut(-1, b"", f"git {verb(args)}: {exc}")

    def evict(self, keep: Path | None = None) -> list[str]:
        """Remove least recently used mirrors no run holds until the cache fits; return their names."""
        mirrors = []
        for path in self.root.glob("*.git"):
            stamp = path / _STAMP
            used = stamp.stat().st_mtime if stamp.exists() else 0.0
            mirrors.append((used, path, disk_usage(path)))
        total = sum(size for _, _, size in mirrors)
        removed: list[str] = []
        for used, path, size in sorted(mirrors):
            if total <= self.max_bytes:
                break
            if path == keep or time.time() - used < _RECENT_S:
                continue
            fds = [self._lock_fd(path.stem, kind) for kind in ("use", "fetch")]
            try:
                try:
                    for fd in fds:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a run holds it, or a fetch is under way
                shutil.rmtree(path, ignore_errors=True)
                total -= size
                removed.append(path.name)
            finally:
                for fd in fds:
                    os.close(fd)
        return removed


def disk_usage(path: Path) -> int:
    """Bytes ``path`` (a mirror) takes on disk."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return redact_url(" | ".join(lines[-3:]))[:500] or "git gave no reason"
