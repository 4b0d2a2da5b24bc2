"""The agent's work tree, taken as data: a walk that never follows, resolves or executes anything.

After a run the host must turn what the agent left in its work tree into a commit. Running git
there (``git add -A``) would make the host read the agent's ``.git``, ``.gitattributes``, nested
repositories and helpers. Instead the host walks the tree itself, the way an archiver would:

- every directory is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so a
  symlinked directory is never entered and a path swapped mid-walk cannot lead elsewhere;
- a regular file becomes a blob of the bytes it holds (opened ``O_NOFOLLOW | O_NONBLOCK`` and
  checked with ``fstat``, so a FIFO or device cannot block or feed the host); a symlink becomes a
  blob of its target text — never followed; anything else (sockets, FIFOs) is skipped;
- the top-level ``.git`` (the agent's own disposable copy) is never read; a directory holding a
  ``.git`` entry is a nested repository and is dropped whole (git would only record a gitlink,
  which would mean resolving it); names git treats as ``.git`` on other file systems are dropped;
- a file is reused from the start commit only when its ``lstat`` (inode, size, mode, mtime and
  ctime — the agent cannot set ctime) equals the snapshot taken before the container started.

What comes out is a `git fast-import` stream: the host's own git writes it into the host-owned
repository, reading nothing from the work tree.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from core.errors import WorkspaceError

MODE_FILE, MODE_EXEC, MODE_LINK, MODE_GITLINK = "100644", "100755", "120000", "160000"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# Characters HFS+ ignores in names, so ".g\u200cit" is ".git" there (git's is_hfs_dotgit).
_HFS_IGNORED = dict.fromkeys([*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF])
# Symlinks git's fsck refuses (GitHub rejects a push containing them).
_NO_SYMLINK = frozenset({b".gitmodules", b".gitattributes", b".gitignore", b".mailmap"})
_MAX_IGNORE_FILE = 1 << 20


@dataclass(frozen=True)
class Stat:
    """The parts of ``lstat`` that change whenever a file's content, type or mode changes."""

    mode: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stat:
        """The :class:`Stat` of an ``os.stat_result``."""
        return cls(st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Limits:
    """How much of a work tree the host takes."""

    max_entries: int = 500_000
    max_file_bytes: int = 100 * 1024 * 1024  # GitHub refuses larger files
    max_total_bytes: int = 2 * 1024 * 1024 * 1024
    max_depth: int = 200


@dataclass
class Entry:
    """One path of the new tree: reused from the start commit (``sha``) or read from the tree."""

    path: bytes
    mode: str
    sha: str | None = None
    stat: Stat | None = None


@dataclass
class Scan:
    """The work tree as found: its entries, the paths that are new, what was dropped and why."""

    entries: list[Entry] = field(default_factory=list)
    new_paths: list[bytes] = field(default_factory=list)
    gitignores: dict[bytes, bytes] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def is_dotgit(name: bytes) -> bool:
    """True for ``.git`` and every name git treats as ``.git`` on NTFS or HFS+ (``.GIT``, ``git~1``,
    ``.git.``, ``.g\u200cit``, ``.git:stream``)."""
    text = name.decode("utf-8", "surrogateescape").translate(_HFS_IGNORED).casefold()
    text = text.split(":", 1)[0].rstrip(". ")
    return text in (".git", "git~1")


def parse_ls_tree(output: bytes) -> dict[bytes, tuple[str, str]]:
    """``git ls-tree -r -z`` output as ``{path: (mode, sha)}``."""
    listing: dict[bytes, tuple[str, str]] = {}
    for record in output.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, _kind, sha = meta.decode().split(" ")
        listing[path] = (mode, sha)
    return listing


@contextmanager
def _opendir(name: bytes | str, dir_fd: int | None) -> Iterator[int]:
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _join(prefix: bytes, name: bytes) -> bytes:
    return prefix + b"/" + name if prefix else name


def snapshot(tree: Path) -> dict[bytes, Stat]:
    """The ``lstat`` of every entry under ``tree`` (its top-level ``.git`` left out)."""
    found: dict[bytes, Stat] = {}

    def walk(fd: int, prefix: bytes) -> None:  # a tree the host itself just checked out
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in entries:
            name = os.fsencode(entry.name)
            if not prefix and is_dotgit(name):
                continue
            st = entry.stat(follow_symlinks=False)
            path = _join(prefix, name)
            found[path] = Stat.of(st)
            if stat.S_ISDIR(st.st_mode):
                with _opendir(name, fd) as sub:
                    walk(sub, path)

    with _opendir(str(tree), None) as top:
        walk(top, b"")
    return found


def scan(
    tree: Path, before: dict[bytes, Stat], listing: dict[bytes, tuple[str, str]], limits: Limits
) -> Scan:
    """Walk ``tree`` (see the module docstring) against the snapshot and the start commit."""
    result = Scan()
    gitlinks = {p for p, (mode, _) in listing.items() if mode == MODE_GITLINK}
    for path in sorted(gitlinks):
        result.entries.append(Entry(path, MODE_GITLINK, listing[path][1]))
    total = 0

    def walk(fd: int, prefix: bytes, depth: int = 0) -> None:
        nonlocal total
        if depth > limits.max_depth:
            raise WorkspaceError(f"the work tree nests directories deeper than {limits.max_depth} levels")
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        names = [os.fsencode(e.name) for e in entries]
        if prefix and b".git" in names:
            result.dropped.append(f"{os.fsdecode(prefix)}/ (a nested git repository)")
            return
        for entry, name in zip(entries, names, strict=True):
            path = _join(prefix, name)
            if is_dotgit(name):
                if prefix:
                    result.dropped.append(f"{os.fsdecode(path)} (a name git reserves)")
                continue
            if path in gitlinks:
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                with _opendir(name, fd) as sub:
                    walk(sub, path, depth + 1)
                continue
            if len(result.entries) >= limits.max_entries:
                raise WorkspaceError(f"the work tree has more than {limits.max_entries} files")
            mode = _mode(st)
            if mode is None:
                result.dropped.append(f"{os.fsdecode(path)} (not a file or symlink)")
                continue
            if mode == MODE_LINK and name in _NO_SYMLINK:
                result.dropped.append(f"{os.fsdecode(path)} (git refuses this name as a symlink)")
                continue
            now = Stat.of(st)
            if name == b".gitignore" and mode != MODE_LINK and st.st_size <= _MAX_IGNORE_FILE:
                result.gitignores[path] = _read_at(fd, name, now)
            known = listing.get(path)
            if known is not None and before.get(path) == now and known[0] == mode:
                result.entries.append(Entry(path, mode, sha=known[1]))
                continue
            if mode != MODE_LINK and st.st_size > limits.max_file_bytes:
                result.dropped.append(f"{os.fsdecode(path)} ({st.st_size} bytes; larger than allowed)")
                continue
            total += st.st_size
            if total > limits.max_total_bytes:
                raise WorkspaceError(f"the changes in the work tree exceed {limits.max_total_bytes} bytes")
            result.entries.append(Entry(path, mode, stat=now))
            if known is None:
                result.new_paths.append(path)

    with _opendir(str(tree), None) as top:
        walk(top, b"")
    return result


def _mode(st: os.stat_result) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return MODE_LINK
    if stat.S_ISREG(st.st_mode):
        return MODE_EXEC if st.st_mode & stat.S_IXUSR else MODE_FILE
    return None


def _read_at(dir_fd: int, name: bytes, expected: Stat) -> bytes:
    """The bytes of regular file ``name`` in ``dir_fd``, refusing anything but that very file."""
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_ino != expected.ino:
            raise WorkspaceError(f"{os.fsdecode(name)} changed while the work tree was read")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Delete ``path`` and everything under it, never following a symlink, at any depth.

    ``shutil.rmtree`` recurses once per directory level: an agent that nests a few thousand
    directories would make it raise ``RecursionError`` and leave the tree behind. GNU ``rm``
    walks iteratively, so it takes over then.
    """
    try:
        shutil.rmtree(path, ignore_errors=True)
    except RecursionError:
        subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", str(path)],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=600,
        )


def write_ignore_tree(gitignores: dict[bytes, bytes], into: Path) -> None:
    """Copy the tree's ``.gitignore`` files (as plain host-written files) under ``into``."""
    for path, content in gitignores.items():
        target = Path(os.fsdecode(path))
        (into / target.parent).mkdir(parents=True, exist_ok=True)
        (into / target).write_bytes(content)


def quote(path: bytes) -> bytes:
    """``path`` as a C-style quoted string, as fast-import reads it."""
    out = bytearray(b'"')
    for byte in path:
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte >= 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b'"')


def write_stream(
    tree: Path,
    entries: list[Entry],
    out: IO[bytes],
    *,
    ref: str,
    parent: str,
    message: str,
    ident: bytes,
) -> None:
    """Write a fast-import stream committing exactly ``entries`` on top of ``parent`` to ``ref``.

    Entries with a sha are referenced; the others are read from ``tree`` again, each directory
    opened ``O_NOFOLLOW`` from the top, each file checked to be the one the scan saw.
    """
    body = message.encode("utf-8", "replace")
    out.write(b"commit %s\n" % ref.encode())
    out.write(b"author %s\ncommitter %s\n" % (ident, ident))
    out.write(b"data %d\n%s\n" % (len(body), body))
    out.write(b"from %s\ndeleteall\n" % parent.encode())
    with _opendir(str(tree), None) as top:
        for entry in entries:
            if entry.sha is not None:
                out.write(b"M %s %s %s\n" % (entry.mode.encode(), entry.sha.encode(), quote(entry.path)))
                continue
            assert entry.stat is not None
            out.write(b"M %s inline %s\n" % (entry.mode.encode(), quote(entry.path)))
            *dirs, name = entry.path.split(b"/")
            _write_data(top, dirs, name, entry, out)
    out.write(b"\n")


def _write_data(top: int, dirs: list[bytes], name: bytes, entry: Entry, out: IO[bytes]) -> None:
    fds: list[int] = []
    try:
        fd = top
        for part in dirs:
            fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            fds.append(fd)
        assert entry.stat is not None
        if entry.mode == MODE_LINK:
            target = os.readlink(name, dir_fd=fd)
            out.write(b"data %d\n%s\n" % (len(target), target))
            return
        file_fd = os.open(name, _FILE_FLAGS, dir_fd=fd)
        try:
            st = os.fstat(file_fd)
            if not stat.S_ISREG(st.st_mode) or Stat.of(st) != entry.stat:
                raise WorkspaceError(f"{os.fsdecode(entry.path)} changed while the work tree was read")
            out.write(b"data %d\n" % st.st_size)
            left = st.st_size
            while left > 0:
                chunk = os.read(file_fd, min(left, 1 << 20))
                if not chunk:
                    raise WorkspaceError(f"{os.fsdecode(entry.path)} shrank while it was read")
                out.write(chunk)
                left -= len(chunk)
            out.write(b"\n")
        finally:
            os.close(file_fd)
    except OSError as exc:
        raise WorkspaceError(f"could not read {os.fsdecode(entry.path)} from the work tree: {exc}") from exc
    finally:
        for fd in reversed(fds):
            os.close(fd)
