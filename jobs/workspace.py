"""The host-side git checkout an agent works in, and the push of its result.

Layout of one run under ``root``::

    root/<run_id>/repo/      the checkout, chowned to the sandbox user (``GitWorkspace.path``)
    root/<run_id>/handoff/   the task spec, outside the tree so ``git add -A`` never stages it

The agent owns ``repo/`` (including ``.git``) while it runs, so everything the worker does with
git afterwards treats that directory as hostile: the repository config is restored from a
snapshot taken at clone time (a planted ``core.fsmonitor``, filter driver or ``insteadOf`` would
otherwise run code as root or send the token elsewhere), hooks are disabled, and the push names
the remote URL and a single ``<sha>:refs/heads/handoff/...`` refspec explicitly, never forced.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlparse

from core.errors import WorkspaceError
from core.ports import PushResult

DEFAULT_TIMEOUT_S = 300.0
BRANCH_PREFIX = "handoff/"
# Conservative allow-list: also rules out refspec tricks such as ``handoff/x:refs/heads/main``.
_BRANCH_RE = re.compile(r"^handoff/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
# Inherited variables that change which repository or config git uses, or make it trace headers.
_KEEP_GIT_ENV = ("GIT_SSL_", "GIT_HTTP_")
# On every call: the checkout is owned by the sandbox user, and a credential helper on the host
# must not answer with broader credentials than the header we pass. (Hooks are disabled in the
# repository's own config instead: ``-c`` travels to a local remote's receive-pack and would
# silence the remote's hooks too.)
_BASE_CONFIG = ("-c", "safe.directory=*", "-c", "credential.helper=")


class _Out(NamedTuple):
    rc: int
    stdout: bytes
    stderr: str


def is_local_remote(remote: str) -> bool:
    """True for a filesystem path or ``file://`` URL, false for network remotes."""
    scp_like = re.match(r"^[\w.-]+@[\w.-]+:", remote)  # git@github.com:org/repo.git
    return remote.startswith("file://") or ("://" not in remote and not scp_like)


def check_branch(branch: str) -> None:
    """Raise :class:`WorkspaceError` unless ``branch`` is a safe ``handoff/...`` branch name."""
    bad_part = any(p.startswith(".") or p.endswith(".lock") for p in branch.split("/"))
    if not _BRANCH_RE.match(branch) or ".." in branch or bad_part or branch.endswith("."):
        raise WorkspaceError(f"refusing branch {branch!r}: only {BRANCH_PREFIX}<name> branches are pushed")


def _redact_url(text: str) -> str:
    """Hide ``user:password@`` in any URL inside ``text``."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


class GitWorkspace:
    """A :class:`core.ports.Workspace` backed by the ``git`` CLI."""

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
        self.run_dir = Path(root) / run_id
        self.path = self.run_dir / "repo"
        self.spec_dir = self.run_dir / "handoff"
        self.start_sha: str | None = None
        self._auth_header = auth_header
        self._config_snapshot: bytes | None = None
        self._secrets = self._secret_forms(auth_header)

    # -- Workspace protocol -------------------------------------------------------------------

    def set_auth_header(self, auth_header: str | None) -> None:
        """Use a new auth header from now on (a refreshed token); errors scrub both old and new."""
        self._auth_header = auth_header
        self._secrets = [*self._secrets, *self._secret_forms(auth_header)]

    async def prepare(self) -> None:
        """Clone the remote, check out the task branch, hand the tree to the sandbox user."""
        check_branch(self.branch)
        if self.base_ref is not None and (not self.base_ref.strip() or self.base_ref.startswith("-")):
            raise WorkspaceError(f"invalid base ref {self.base_ref!r}")
        local = is_local_remote(self.remote)
        if local:
            where = unquote(urlparse(self.remote).path) if self.remote.startswith("file://") else self.remote
            if not await asyncio.to_thread(Path(where).exists):
                raise WorkspaceError(f"repository not found: {_redact_url(self.remote)}")
        # A retried job may reuse the run id: start from a clean directory.
        await asyncio.to_thread(shutil.rmtree, self.run_dir, True)
        self.run_dir.mkdir(parents=True)
        # --no-local: a local clone hardlinks object files, and the chown below would then hand
        # the source repository's objects to the sandbox user.
        opts = ["--no-tags", "--no-local"] if local else ["--no-tags", "--filter=blob:none"]
        out = await self._git(
            "clone", "-q", *opts, "--", self.remote, str(self.path), cwd=self.run_dir, check=False
        )
        if out.rc != 0:
            reason = self._reason(out.stderr)
            lowered = reason.lower()
            if any(s in lowered for s in ("not appear to be a git repo", "does not exist", "not found")):
                raise WorkspaceError(f"repository not found: {_redact_url(self.remote)}")
            raise WorkspaceError(f"clone of {_redact_url(self.remote)} failed: {reason}")

        if await self._resolve(f"refs/remotes/origin/{self.branch}"):
            # Follow-up run: continue the branch earlier runs pushed.
            await self._git("checkout", "-q", "-B", self.branch, "--track", f"origin/{self.branch}")
        else:
            start = await self._base_commit()
            await self._git("checkout", "-q", "--no-track", "-B", self.branch, start)
        self.start_sha = await self._head()
        # Hooks in the agent-writable .git must never run on the host; restored with the config.
        await self._git("config", "core.hooksPath", "/dev/null")
        self._config_snapshot = (self.path / ".git" / "config").read_bytes()

        if os.geteuid() == 0 and self.sandbox_uid is not None and self.sandbox_gid is not None:
            await asyncio.to_thread(_chown_tree, self.path, self.sandbox_uid, self.sandbox_gid)
        self.spec_dir.mkdir(mode=0o755)

    async def publish(self, message: str) -> PushResult:
        """Commit everything the agent changed and fast-forward ``refs/heads/<branch>`` on the remote.

        Returns ``changed=False`` without pushing when the tree and HEAD are as they started.
        Refuses (``WorkspaceError``) a non-``handoff/`` branch, rewritten history, or a rejected push.
        """
        check_branch(self.branch)
        start = self._require_prepared()
        await self._git("add", "-A")
        staged = (await self._git("diff", "--cached", "--quiet", check=False)).rc != 0
        head = await self._head()
        if not staged and head == start:
            return PushResult(changed=False, branch=self.branch, head_sha=head, files_changed=[])
        if staged:
            subject = message.strip() or f"Handoff task {self.task_id}"
            await self._git(
                "commit", "-q", "--no-verify", "--no-gpg-sign", "-m", subject, env=self._identity_env()
            )
            head = await self._head()
        # Checked here, not left to the remote, because a first push creates the branch and
        # would accept any history; the agent's own commits pass as long as they extend start.
        if (await self._git("merge-base", "--is-ancestor", start, head, check=False)).rc != 0:
            raise WorkspaceError(
                f"refusing to push {self.branch}: the checkout no longer descends from {start[:12]} "
                "(history was rewritten or HEAD moved to another branch)"
            )
        # The sha, not HEAD, so what is pushed is exactly what was checked; never --force.
        out = await self._git(
            "push", "-q", "--no-verify", "--", self.remote, f"{head}:refs/heads/{self.branch}", check=False
        )
        if out.rc != 0:
            raise WorkspaceError(f"push of {self.branch} was refused: {self._reason(out.stderr)}")
        return PushResult(
            changed=True,
            branch=self.branch,
            head_sha=head,
            files_changed=await self._changed_files(start, head),
        )

    async def cleanup(self) -> None:
        """Delete ``root/<run_id>`` (checkout and spec); a missing directory is fine."""
        await asyncio.to_thread(shutil.rmtree, self.run_dir, True)

    async def diff(self, max_bytes: int = 1_000_000) -> str:
        """The committed branch diff (start commit to HEAD), cut to at most ``max_bytes`` UTF-8 bytes."""
        start = self._require_prepared()
        out = await self._git("diff", "--no-color", "--no-ext-diff", "--no-textconv", start, "HEAD")
        if len(out.stdout) <= max_bytes:
            return out.stdout.decode("utf-8", "replace")
        note = b"\n[diff truncated]\n"
        keep = out.stdout[: max(0, max_bytes - len(note))]
        # "ignore" drops a multi-byte character cut in half, so the result stays within max_bytes.
        return (keep + note)[:max_bytes].decode("utf-8", "ignore")

    # -- helpers ------------------------------------------------------------------------------

    async def _base_commit(self) -> str:
        """The commit a new task branch starts from: ``base_ref`` or the remote's default branch."""
        if self.base_ref is None:
            return await self._head()
        for candidate in (f"refs/remotes/origin/{self.base_ref}", self.base_ref):
            sha = await self._resolve(candidate)
            if sha:
                return sha
        # Tags (cloned with --no-tags) and commits outside any branch need an explicit fetch.
        fetched = await self._git("fetch", "-q", "--no-tags", "origin", self.base_ref, check=False)
        sha = await self._resolve("FETCH_HEAD") if fetched.rc == 0 else None
        if not sha:
            raise WorkspaceError(f"base ref {self.base_ref!r} not found in {_redact_url(self.remote)}")
        return sha

    async def _resolve(self, rev: str) -> str | None:
        out = await self._git("rev-parse", "-q", "--verify", f"{rev}^{{commit}}", check=False)
        sha = out.stdout.decode().strip()
        return sha if out.rc == 0 and sha else None

    async def _head(self) -> str:
        return (await self._git("rev-parse", "--verify", "HEAD")).stdout.decode().strip()

    async def _changed_files(self, start: str, head: str) -> list[str]:
        out = await self._git("diff", "--name-only", "-z", "--no-renames", start, head)
        return [name for name in out.stdout.decode("utf-8", "replace").split("\0") if name]

    def _require_prepared(self) -> str:
        if self.start_sha is None:
            raise WorkspaceError("workspace was not prepared")
        return self.start_sha

    def _guard_checkout(self) -> None:
        """Undo what the agent may have planted in ``.git`` before git runs there as root."""
        git_dir = self.path / ".git"
        if git_dir.is_symlink() or not git_dir.is_dir():
            raise WorkspaceError("the checkout's .git directory is missing or was replaced")
        if self._config_snapshot is not None:
            config = git_dir / "config"
            config.unlink(missing_ok=True)  # never write through a symlink the agent left
            config.write_bytes(self._config_snapshot)

    def _identity_env(self) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.author_name,
            "GIT_COMMITTER_EMAIL": self.author_email,
        }

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k.startswith(_KEEP_GIT_ENV)}
        env["GIT_TERMINAL_PROMPT"] = "0"
        env["GCM_INTERACTIVE"] = "never"
        if self._auth_header:
            # Environment, not argv: /proc/<pid>/cmdline is world-readable, environ is not.
            env.update(
                GIT_CONFIG_COUNT="1",
                GIT_CONFIG_KEY_0="http.extraheader",
                GIT_CONFIG_VALUE_0=self._auth_header,
            )
        return env

    @staticmethod
    def _secret_forms(header: str | None) -> list[str]:
        """The header, its value, its token and the token inside a basic credential."""
        if not header:
            return []
        forms = {header, header.partition(":")[2].strip()}
        token = header.split()[-1]
        forms.add(token)
        try:
            decoded = base64.b64decode(token, validate=True).decode()
            forms.update({decoded, decoded.partition(":")[2]})
        except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
            pass
        return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with the auth header (in any of its forms) and URL credentials removed."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _redact_url(text)

    def _reason(self, stderr: str) -> str:
        """A short, secret-free reason taken from git's stderr."""
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        key = [ln for ln in lines if ln.startswith(("fatal:", "error:", "remote:", "!", "hint:"))] or lines
        text = " | ".join(ln.removeprefix("fatal: ").removeprefix("error: ") for ln in key[:6])
        return self.scrub(text)[:500] or "git gave no reason"

    async def _git(
        self,
        *args: str,
        cwd: Path | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> _Out:
        """Run one git command (no shell) under a timeout; kill its process group on expiry."""
        if cwd is None:
            cwd = self.path
            self._guard_checkout()
        full_env = self._base_env() | (env or {})
        try:
            proc = await asyncio.create_subprocess_exec(
                "git",
                *_BASE_CONFIG,
                *args,
                cwd=cwd,
                env=full_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # own process group, so helpers die with git on timeout
            )
        except FileNotFoundError as exc:
            raise WorkspaceError("git is not installed on the worker") from exc
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            raise WorkspaceError(f"git {args[0]} timed out after {self.timeout_s:g}s") from None
        finally:
            if proc.returncode is None:  # timed out or cancelled
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        rc = proc.returncode if proc.returncode is not None else -1
        result = _Out(rc, stdout, stderr.decode("utf-8", "replace"))
        if check and result.rc != 0:
            raise WorkspaceError(f"git {args[0]} failed: {self._reason(result.stderr)}")
        return result


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give ``top`` and everything under it to ``uid:gid`` without following symlinks."""
    os.chown(top, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
