"""The diff of a run's branch against its base, computed on the host with ``git``.

Only for repositories the API host can open directly (a local path, a bare repository, a
``file://`` URL, as the task's ``clone_url`` link or ``task.repo``); for GitHub repositories the page
links to GitHub's compare view instead. The repository is not trusted: external diff drivers,
text conversion filters and the fsmonitor hook are switched off, refs are validated, and the call
is bounded in time and in output.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.links import TaskLinks
from core.models import Run, Task
from jobs.hostgit import SAFE_CONFIG, git_env, is_local_remote
from web.dashboard.github import is_github_repo

TIMEOUT_S = 5.0
MAX_BYTES = 512 * 1024
MAX_LINES = 3000
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
_SAFE = ("-c", "safe.directory=*", "-c", "diff.noprefix=false", *SAFE_CONFIG)


@dataclass
class FileDiff:
    """One file of the diff: its name, counts and lines (``kind`` is add, del, hunk or ctx)."""

    name: str
    additions: int = 0
    deletions: int = 0
    lines: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DiffView:
    """The diff, or why there is none."""

    files: list[FileDiff] = field(default_factory=list)
    unavailable: str | None = None
    truncated: bool = False
    compare_url: str | None = None
    base: str | None = None
    head: str | None = None

    @property
    def additions(self) -> int:
        """Lines added over all files."""
        return sum(f.additions for f in self.files)

    @property
    def deletions(self) -> int:
        """Lines removed over all files."""
        return sum(f.deletions for f in self.files)


async def branch_diff(task: Task, run: Run | None, github_web_url: str) -> DiffView:
    """The diff of ``run``'s branch (its pushed head) against the task's base."""
    branch = (run.branch if run else None) or task.branch
    head = (run.head_sha if run else None) or branch
    compare = None
    if branch and is_github_repo(task.repo) and _REF.match(branch):
        # Without a base, GitHub compares against the repository's default branch.
        spec = f"{task.base_ref}...{branch}" if task.base_ref else branch
        compare = f"{github_web_url.rstrip('/')}/{task.repo}/compare/{spec}"
    if run is not None and run.outcome == "running":
        return DiffView(unavailable="The diff appears when the run has pushed its branch.", compare_url=None)
    if not head:
        return DiffView(unavailable="No branch was pushed by this run.", compare_url=compare)
    git_dir = _local_git_dir(TaskLinks.of(task).clone_source(task.repo))
    if git_dir is None:
        return DiffView(
            unavailable="Diff unavailable: the repository is not on this host.", compare_url=compare
        )
    base = task.base_ref or await _default_branch(git_dir)
    if not base or not _REF.match(base) or not _REF.match(head):
        return DiffView(unavailable="Diff unavailable: unknown base branch.", compare_url=compare)
    args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "-M", f"{base}...{head}", "--"]
    out = await _git(git_dir, *args)
    if out is None:
        return DiffView(unavailable="Diff unavailable: git did not answer in time.", compare_url=compare)
    view = parse(out[0], truncated=out[1])
    view.compare_url, view.base, view.head = compare, base, branch or head
    if not view.files:
        view.unavailable = "No changes between the branch and its base."
    return view


def _local_git_dir(source: str) -> Path | None:
    if not is_local_remote(source):
        return None
    path = Path(source.removeprefix("file://"))
    if not path.is_absolute() or not path.is_dir():
        return None
    dot_git = path / ".git"
    return dot_git if dot_git.is_dir() else path


async def _default_branch(git_dir: Path) -> str | None:
    out = await _git(git_dir, "symbolic-ref", "--short", "HEAD")
    if out is None:
        return None
    return out[0].strip() or None


async def _git(git_dir: Path, *args: str) -> tuple[str, bool] | None:
    """stdout of ``git`` (cut at :data:`MAX_BYTES`, with a flag), or ``None`` on error or timeout."""
    # No user or system config and nothing inherited: nothing but the flags below applies.
    env = git_env(Path("/nonexistent"), git_dir.parent)
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "--git-dir",
            str(git_dir),
            *_SAFE,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
    except OSError:
        return None
    assert proc.stdout is not None
    try:
        data = await asyncio.wait_for(proc.stdout.read(MAX_BYTES + 1), TIMEOUT_S)
        truncated = len(data) > MAX_BYTES
        if truncated:
            proc.kill()
        rc = await asyncio.wait_for(proc.wait(), TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    if rc != 0 and not truncated:
        return None
    return data[:MAX_BYTES].decode("utf-8", errors="replace"), truncated


def parse(text: str, *, truncated: bool = False) -> DiffView:
    """Split unified diff text into files with classified lines (at most :data:`MAX_LINES`)."""
    view = DiffView(truncated=truncated)
    current: FileDiff | None = None
    shown = 0
    for line in text.splitlines():
        if line.startswith("diff --git "):
            current = FileDiff(name=_file_name(line))
            view.files.append(current)
            continue
        if current is None:
            continue
        if line.startswith(("index ", "--- ", "+++ ", "similarity ", "rename ", "new file", "deleted file")):
            if line.startswith("rename to "):
                current.name = line.removeprefix("rename to ")
            continue
        kind = "ctx"
        if line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind, current.additions = "add", current.additions + 1
        elif line.startswith("-"):
            kind, current.deletions = "del", current.deletions + 1
        if shown < MAX_LINES:
            current.lines.append((kind, line))
            shown += 1
        else:
            view.truncated = True
    return view


def _file_name(header: str) -> str:
    # ``diff --git a/path b/path``: the b-side is the name after the change.
    _, _, rest = header.partition(" b/")
    return rest or header.removeprefix("diff --git ")
