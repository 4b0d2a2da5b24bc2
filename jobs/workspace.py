"""The run's checkout and the push of its result, with the repository kept out of the agent's reach.

Layout of one run under ``root`` (the workspace directory, never inside a git repository)::

    root/<run_id>/git/       the host's bare repository: objects, refs, config — never mounted
    root/<run_id>/repo/      the work tree, mounted at /workspace (``GitWorkspace.path``)
    root/<run_id>/repo/.git  the agent's own disposable shallow copy, which the host never reads
    root/<run_id>/handoff/   the task spec, mounted read-only at /handoff/task.json
    root/<run_id>/home/      the empty ``HOME`` of every host git process
    root/<run_id>/scratch/   host-written inputs to git (copied .gitignore files, the import stream)

Before the run the host clones the remote into ``git/``, checks the start commit out into
``repo/``, gives the agent a shallow clone of it as ``repo/.git`` (so ``git status``/``git diff``
work in the sandbox), hands ``repo/`` to the sandbox user, and snapshots every ``lstat``.

After the run the host never runs git in ``repo/``. It takes the work tree as data
(:mod:`jobs.worktree`): files and symlinks become blobs, nothing is followed, nested repositories
are dropped, unchanged files (same ``lstat`` as the snapshot) are reused from the start commit,
new files pass the tree's ``.gitignore`` rules (checked by git against host-written copies), and
one commit on top of the start commit is written with ``git fast-import`` into ``git/`` and
pushed as ``<sha>:refs/heads/handoff/<task>`` — never forced. The agent's own commits, branches
and history edits stay in its disposable ``.git``: only the content of its work tree counts.
Every git process runs with :mod:`jobs.hostgit`'s minimal environment.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from core.errors import WorkspaceError
from core.ports import PushResult
from jobs import worktree
from jobs.hostgit import (
    DEFAULT_TIMEOUT_S,
    GitOut,
    git_env,
    inside_repository,
    is_local_remote,
    protocol_config,
    redact_url,
    run_git,
    secret_forms,
    verb,
)
from jobs.mirror import Lease, MirrorCache

__all__ = ["BRANCH_PREFIX", "GitWorkspace", "check_branch", "check_workspace_root", "is_local_remote"]

BRANCH_PREFIX = "handoff/"
# Conservative allow-list: also rules out refspec tricks such as ``handoff/x:refs/heads/main``.
_BRANCH_RE = re.compile(r"^handoff/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_CAPTURE_REF = "refs/handoff/capture"
# Checkout and capture both keep bytes as they are: no eol, encoding or filter conversion, so a
# file the agent did not touch is byte-identical and one it did is committed as written.
_NO_CONVERSION = b"* -text -eol -filter -ident -working-tree-encoding\n"
_AGENT_CONFIG = """\
[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
\ttrustctime = false
\tcheckStat = minimal
"""


def check_branch(branch: str) -> None:
    """Raise :class:`WorkspaceError` unless ``branch`` is a safe ``handoff/...`` branch name."""
    bad_part = any(p.startswith(".") or p.endswith(".lock") for p in branch.split("/"))
    if not _BRANCH_RE.match(branch) or ".." in branch or bad_part or branch.endswith("."):
        raise WorkspaceError(f"refusing branch {branch!r}: only {BRANCH_PREFIX}<name> branches are pushed")


def check_workspace_root(root: Path) -> None:
    """Refuse a workspace directory inside a git repository (git discovery could climb into it)."""
    enclosing = inside_repository(root)
    if enclosing is not None:
        raise WorkspaceError(
            f"the workspace directory {root} is inside the git repository at {enclosing}; "
            "set HANDOFF_WORKSPACE_DIR to a directory outside every repository"
        )


def _ident_part(value: str) -> str:
    return re.sub(r"[<>\n\r\0]", "", value).strip() or "Handoff"


class GitWorkspace:
    """A :class:`core.ports.Workspace`: host-owned repository, agent-owned work tree."""

    def __init__(
        self,
        remote: str,
        root: Path,
        task_id: str,
        run_id: str,
        *,
        base_ref: str | None = None,
        branch: str | None = None,
        author_name: str = "Handoff",
        author_email: str = "handoff@localhost",
        sandbox_uid: int | None = 1000,
        sandbox_gid: int | None = 1000,
        auth_header: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        history_depth: int = 1,
        limits: worktree.Limits | None = None,
        mirrors: MirrorCache | None = None,
    ) -> None:
        self.remote = remote
        self.task_id = task_id
        self.run_id = run_id
        self.base_ref = base_ref
        self.branch = branch if branch is not None else f"{BRANCH_PREFIX}{task_id}"
        self.author_name = author_name
        self.author_email = author_email
        self.sandbox_uid = sandbox_uid
        self.sandbox_gid = sandbox_gid
        self.timeout_s = timeout_s
        self.history_depth = history_depth
        self.limits = limits or worktree.Limits()
        self.mirrors = mirrors
        self._lease: Lease | None = None
        self.root = Path(root)
        self.run_dir = self.root / run_id
        self.git_dir = self.run_dir / "git"
        self.path = self.run_dir / "repo"
        self.spec_dir = self.run_dir / "handoff"
        self.home = self.run_dir / "home"
        self.scratch = self.run_dir / "scratch"
        self.start_sha: str | None = None
        self.head_sha: str | None = None
        self._auth_header = auth_header
        self._secrets = secret_forms(auth_header)
        self._before: dict[bytes, worktree.Stat] = {}
        self._listing: dict[bytes, tuple[str, str]] = {}

    # -- Workspace protocol -------------------------------------------------------------------

    def set_auth_header(self, auth_header: str | None) -> None:
        """Use a new auth header from now on (a refreshed token); errors scrub both old and new."""
        self._auth_header = auth_header
        self._secrets = [*self._secrets, *secret_forms(auth_header)]

    async def prepare(self) -> None:
        """Clone into the host repository, check out the start commit, hand the tree to the agent."""
        check_branch(self.branch)
        if self.base_ref is not None and (not self.base_ref.strip() or self.base_ref.startswith("-")):
            raise WorkspaceError(f"invalid base ref {self.base_ref!r}")
        check_workspace_root(self.root)
        if is_local_remote(self.remote) and not await asyncio.to_thread(self._local_path().exists):
            raise WorkspaceError(f"repository not found: {redact_url(self.remote)}")
        # A retried job may reuse the run id: start from a clean directory.
        await asyncio.to_thread(worktree.remove_tree, self.run_dir)
        self.run_dir.mkdir(parents=True, mode=0o755)
        for private in (self.home, self.scratch):
            private.mkdir(mode=0o700)
        await self._clone()
        start = await self._start_commit()
        await self._git("update-ref", f"refs/heads/{self.branch}", start)
        await self._git("symbolic-ref", "HEAD", f"refs/heads/{self.branch}")
        (self.git_dir / "info").mkdir(exist_ok=True)
        (self.git_dir / "info" / "attributes").write_bytes(_NO_CONVERSION)
        self.path.mkdir(mode=0o755)
        # Writing the files (I/O) and packing the agent's copy (CPU) overlap; both only read
        # the host repository, and the copy is moved into place once the files are written.
        checkout, copy, ls = await asyncio.gather(
            self._git("--work-tree", str(self.path), "read-tree", "-u", "--reset", "HEAD"),
            self._agent_copy() if self.history_depth > 0 else asyncio.sleep(0),
            self._git("ls-tree", "-r", "-z", "--full-tree", start),
            return_exceptions=True,
        )
        for result in (checkout, copy, ls):
            if isinstance(result, BaseException):
                raise result
        if self.history_depth > 0:
            await asyncio.to_thread(self._place_agent_copy)
        if os.geteuid() == 0 and self.sandbox_uid is not None and self.sandbox_gid is not None:
            await asyncio.to_thread(_chown_tree, self.path, self.sandbox_uid, self.sandbox_gid)
        assert isinstance(ls, GitOut)
        self._listing = worktree.parse_ls_tree(ls.stdout)
        # After the chown (which changes ctime): from here on, any change the agent makes to a
        # file changes its ctime, which it cannot set back.
        self._before = await asyncio.to_thread(worktree.snapshot, self.path)
        self.start_sha = self.head_sha = start
        self.spec_dir.mkdir(mode=0o755)

    async def publish(self, message: str) -> PushResult:
        """Commit the work tree (taken as data) on top of the start commit and push it.

        Returns ``changed=False`` without pushing when the tree is as it started. Refuses
        (``WorkspaceError``) a non-``handoff/`` branch or a rejected push; never forces.
        """
        check_branch(self.branch)
        start = self._require_prepared()
        found = await asyncio.to_thread(worktree.scan, self.path, self._before, self._listing, self.limits)
        ignored = await self._ignored(found)
        entries = [e for e in found.entries if e.path not in ignored]
        head = await self._commit(entries, start, message)
        dropped = list(found.dropped)
        if await self._tree(head) == await self._tree(start):
            return PushResult(changed=False, branch=self.branch, head_sha=start, dropped=dropped)
        out = await self._git(
            "push", "-q", "--no-verify", "--", self.remote, f"{head}:refs/heads/{self.branch}",
            check=False, remote=True,
        )  # fmt: skip
        if out.rc != 0:
            raise WorkspaceError(f"push of {self.branch} was refused: {self._reason(out.stderr)}")
        self.head_sha = head
        changed = await self._git("diff-tree", "-r", "-z", "--name-only", "--no-renames", start, head)
        files = [n for n in changed.stdout.decode("utf-8", "replace").split("\0") if n]
        return PushResult(
            changed=True, branch=self.branch, head_sha=head, files_changed=files, dropped=dropped
        )

    async def cleanup(self) -> None:
        """Delete ``root/<run_id>`` (repository, work tree, spec) and let go of the mirror."""
        await asyncio.to_thread(worktree.remove_tree, self.run_dir)
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    async def diff(self, max_bytes: int = 1_000_000) -> str:
        """The published change (start commit to the pushed head), cut to at most ``max_bytes``."""
        start = self._require_prepared()
        head = self.head_sha or start
        out = await self._git("diff", "--no-color", "--no-ext-diff", "--no-textconv", start, head)
        if len(out.stdout) <= max_bytes:
            return out.stdout.decode("utf-8", "replace")
        note = b"\n[diff truncated]\n"
        keep = out.stdout[: max(0, max_bytes - len(note))]
        # "ignore" drops a multi-byte character cut in half, so the result stays within max_bytes.
        return (keep + note)[:max_bytes].decode("utf-8", "ignore")

    # -- before the run -----------------------------------------------------------------------

    def _local_path(self) -> Path:
        remote = self.remote
        return Path(unquote(urlparse(remote).path) if remote.startswith("file://") else remote)

    async def _clone(self) -> None:
        """The run's repository: borrowing a leased mirror's objects, or a clone of its own."""
        if self.mirrors is not None:
            try:
                self._lease = await self.mirrors.lease(self.remote, self._auth_header)
            except WorkspaceError as exc:
                raise self._clone_error(str(exc)) from None
            await self._git(
                "-c", "protocol.file.allow=always", "clone", "--bare", "-q", "--shared", "--no-tags",
                "--", str(self._lease.path), str(self.git_dir), bare=True,
            )  # fmt: skip
            return
        out = await self._git(
            "clone", "--bare", "-q", "--no-tags", "--", self.remote, str(self.git_dir),
            check=False, remote=True, bare=True,
        )  # fmt: skip
        if out.rc != 0:
            raise self._clone_error(f"clone of {redact_url(self.remote)} failed: {self._reason(out.stderr)}")

    def _clone_error(self, message: str) -> WorkspaceError:
        lowered = message.lower()
        if any(s in lowered for s in ("not appear to be a git repo", "does not exist", "not found")):
            return WorkspaceError(f"repository not found: {redact_url(self.remote)}")
        return WorkspaceError(self.scrub(message))

    async def _start_commit(self) -> str:
        """The task branch if earlier runs pushed it, else ``base_ref``, else the default branch."""
        followup = await self._resolve(f"refs/heads/{self.branch}")
        if followup:
            return followup
        if self.base_ref is None:
            head = await self._resolve("HEAD")
            if head is None:
                raise WorkspaceError(f"{redact_url(self.remote)} has no default branch to start from")
            return head
        for candidate in (f"refs/heads/{self.base_ref}", self.base_ref):
            sha = await self._resolve(candidate)
            if sha:
                return sha
        # Tags (cloned with --no-tags), pull request heads and commits outside any branch.
        fetched = await self._git(
            "fetch", "-q", "--no-tags", "--", self.remote, self.base_ref, check=False, remote=True
        )
        sha = await self._resolve("FETCH_HEAD") if fetched.rc == 0 else None
        if not sha:
            raise WorkspaceError(f"base ref {self.base_ref!r} not found in {redact_url(self.remote)}")
        return sha

    async def _agent_copy(self) -> None:
        """A shallow clone of the task branch for the agent's own use, beside the work tree."""
        await self._git(
            "-c", "protocol.file.allow=always", "clone", "--bare", "-q", "--no-tags", "--single-branch",
            f"--depth={self.history_depth}", f"--branch={self.branch}", "--",
            f"file://{self.git_dir}", str(self.run_dir / "agent.git"), bare=True,
        )  # fmt: skip

    def _place_agent_copy(self) -> None:
        """Move the agent's copy to ``repo/.git`` (still before any agent runs)."""
        dot_git = self.path / ".git"
        os.rename(self.run_dir / "agent.git", dot_git)
        # Written whole: no remote pointing back at the host, and — since the chown changes every
        # file's ctime, uid and gid — stat checks on content stamps only, or the agent's first
        # `git status` rehashes the whole tree.
        (dot_git / "config").write_text(_AGENT_CONFIG)
        # The host's index matches the files just checked out, so the agent's `git status` is quick.
        shutil.copyfile(self.git_dir / "index", dot_git / "index")

    # -- after the run ------------------------------------------------------------------------

    async def _ignored(self, found: worktree.Scan) -> set[bytes]:
        """New paths the tree's ``.gitignore`` files exclude (as ``git add -A`` would)."""
        if not found.new_paths or not found.gitignores:
            return set()
        ignore_tree = self.scratch / "ignore"
        await asyncio.to_thread(shutil.rmtree, ignore_tree, True)
        ignore_tree.mkdir()
        await asyncio.to_thread(worktree.write_ignore_tree, found.gitignores, ignore_tree)
        out = await self._git(
            "--work-tree", str(ignore_tree), "check-ignore", "--no-index", "-z", "--stdin",
            stdin=b"\0".join(found.new_paths) + b"\0", check=False, cwd=ignore_tree,
        )  # fmt: skip
        if out.rc not in (0, 1):  # 1: nothing is ignored
            raise WorkspaceError(f"git check-ignore failed: {self._reason(out.stderr)}")
        return {p for p in out.stdout.split(b"\0") if p}

    async def _commit(self, entries: list[worktree.Entry], parent: str, message: str) -> str:
        """Write one commit of exactly ``entries`` on ``parent`` with ``git fast-import``."""
        stream = self.scratch / "import.stream"
        name, email = _ident_part(self.author_name), _ident_part(self.author_email)
        ident = f"{name} <{email}> {int(time.time())} +0000".encode()
        subject = message.strip() or f"Handoff task {self.task_id}"

        def write() -> None:
            with stream.open("wb") as out:
                worktree.write_stream(
                    self.path, entries, out, ref=_CAPTURE_REF, parent=parent, message=subject, ident=ident
                )

        await asyncio.to_thread(write)
        out = await self._git("fast-import", "--quiet", "--force", stdin=stream, check=False)
        stream.unlink(missing_ok=True)
        if out.rc != 0:
            raise WorkspaceError(f"could not record the work tree: {self._reason(out.stderr)}")
        sha = await self._resolve(_CAPTURE_REF)
        if sha is None:
            raise WorkspaceError("could not record the work tree: no commit was written")
        return sha

    # -- helpers ------------------------------------------------------------------------------

    async def _tree(self, commit: str) -> str:
        return (await self._git("rev-parse", f"{commit}^{{tree}}")).stdout.decode().strip()

    async def _resolve(self, rev: str) -> str | None:
        out = await self._git("rev-parse", "-q", "--verify", f"{rev}^{{commit}}", check=False)
        sha = out.stdout.decode().strip()
        return sha if out.rc == 0 and sha else None

    def _require_prepared(self) -> str:
        if self.start_sha is None:
            raise WorkspaceError("workspace was not prepared")
        return self.start_sha

    def scrub(self, text: str) -> str:
        """``text`` with the auth header (in any of its forms) and URL credentials removed."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact_url(text)

    def _reason(self, stderr: str) -> str:
        """A short, secret-free reason taken from git's stderr."""
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        key = [ln for ln in lines if ln.startswith(("fatal:", "error:", "remote:", "!", "hint:"))] or lines
        text = " | ".join(ln.removeprefix("fatal: ").removeprefix("error: ") for ln in key[:6])
        return self.scrub(text)[:500] or "git gave no reason"

    async def _git(
        self,
        *args: str,
        check: bool = True,
        remote: bool = False,
        bare: bool = False,
        stdin: bytes | Path | None = None,
        cwd: Path | None = None,
    ) -> GitOut:
        """One host git process on the host repository (see :mod:`jobs.hostgit`).

        ``remote``: the command talks to the remote (auth header and its protocol allowed).
        ``bare``: no implicit ``--git-dir`` (the arguments name the repository themselves).
        """
        env = git_env(self.home, self.root, self._auth_header if remote else None)
        prefix = [] if bare else ["--git-dir", str(self.git_dir)]
        if remote:
            prefix = [*protocol_config(self.remote), *prefix]
        result = await run_git(
            [*prefix, *args], env=env, cwd=cwd or self.run_dir, timeout_s=self.timeout_s, stdin=stdin
        )
        if check and result.rc != 0:
            raise WorkspaceError(f"git {verb(args)} failed: {self._reason(result.stderr)}")
        return result


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give ``top`` and everything under it to ``uid:gid`` without following symlinks."""
    os.chown(top, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
