"""GitWorkspace against real git and real bare repositories in tmp_path (network: loopback only)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core.errors import WorkspaceError
from jobs.workspace import GitWorkspace

TOKEN = "ghs_S3cretInstallationToken"
AUTH_HEADER = "AUTHORIZATION: basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_AUTHOR_NAME": "Seed",
    "GIT_AUTHOR_EMAIL": "seed@example.com",
    "GIT_COMMITTER_NAME": "Seed",
    "GIT_COMMITTER_EMAIL": "seed@example.com",
}


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git synchronously as the test (and the 'agent') would; return stripped stdout."""
    out = subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def remote_sha(bare: Path, ref: str) -> str | None:
    """The sha ``ref`` points at in ``bare``, or None when it does not exist."""
    out = subprocess.run(
        ["git", "--git-dir", str(bare), "rev-parse", "-q", "--verify", ref],
        env=ENV,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or None


@dataclass
class Remote:
    bare: Path
    main_sha: str
    release_sha: str


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """A bare repo: ``main`` (default) with a few files, ``release`` one commit ahead, tag v1."""
    bare = tmp_path / "origin.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git("clone", "-q", str(bare), str(seed))
    (seed / "src").mkdir()
    (seed / "README.md").write_text("# demo\n")
    (seed / "src" / "app.py").write_text("print('hi')\n")
    (seed / ".gitignore").write_text("*.log\n")
    git("checkout", "-q", "-b", "main", cwd=seed)
    git("add", "-A", cwd=seed)
    git("commit", "-q", "-m", "initial", cwd=seed)
    git("push", "-q", "origin", "main", cwd=seed)
    main_sha = git("rev-parse", "HEAD", cwd=seed)
    git("checkout", "-q", "-b", "release", cwd=seed)
    (seed / "RELEASE.txt").write_text("1.0\n")
    git("add", "-A", cwd=seed)
    git("commit", "-q", "-m", "release", cwd=seed)
    git("tag", "v1", cwd=seed)
    git("push", "-q", "origin", "release", "v1", cwd=seed)
    return Remote(bare, main_sha, git("rev-parse", "HEAD", cwd=seed))


def make_ws(remote: Remote | str, tmp_path: Path, run_id: str = "run1", **kw: Any) -> GitWorkspace:
    url = str(remote.bare) if isinstance(remote, Remote) else remote
    return GitWorkspace(url, tmp_path / "work", "t1", run_id, **kw)


async def test_prepare_branches_from_default_branch(remote: Remote, tmp_path: Path) -> None:
    ws = make_ws(remote, tmp_path)
    await ws.prepare()
    assert ws.path == tmp_path / "work" / "run1" / "repo"
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=ws.path) == "handoff/t1"
    assert git("rev-parse", "HEAD", cwd=ws.path) == remote.main_sha == ws.start_sha
    assert (ws.path / "src" / "app.py").read_text() == "print('hi')\n"
    assert ws.spec_dir == ws.path.parent / "handoff" and ws.spec_dir.is_dir()


async def test_prepare_from_file_url(remote: Remote, tmp_path: Path) -> None:
    ws = make_ws(f"file://{remote.bare}", tmp_path)
    await ws.prepare()
    assert git("rev-parse", "HEAD", cwd=ws.path) == remote.main_sha


@pytest.mark.parametrize("kind", ["branch", "tag", "sha"])
async def test_prepare_from_explicit_base_ref(remote: Remote, tmp_path: Path, kind: str) -> None:
    base_ref = {"branch": "release", "tag": "v1", "sha": remote.release_sha}[kind]
    ws = make_ws(remote, tmp_path, base_ref=base_ref)
    await ws.prepare()
    assert git("rev-parse", "HEAD", cwd=ws.path) == remote.release_sha
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=ws.path) == "handoff/t1"


@pytest.mark.parametrize("form", ["path", "file_url"])
async def test_unknown_repository_is_not_found(tmp_path: Path, form: str) -> None:
    missing = tmp_path / "nowhere" / "repo.git"
    ws = make_ws(str(missing) if form == "path" else f"file://{missing}", tmp_path)
    with pytest.raises(WorkspaceError, match="repository not found"):
        await ws.prepare()


async def test_existing_dir_that_is_no_repository_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(WorkspaceError, match="repository not found"):
        await make_ws(str(tmp_path / "plain"), tmp_path).prepare()


async def test_unreachable_remote_fails_quickly(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(WorkspaceError, match=r"clone of http://127\.0\.0\.1:9/x\.git failed"):
        await make_ws("http://127.0.0.1:9/x.git", tmp_path).prepare()
    assert time.monotonic() - started < 30


async def test_hanging_remote_times_out(tmp_path: Path) -> None:
    # Listening but never accepting: git connects and then waits forever for an answer.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(WorkspaceError, match="timed out after 1s"):
            await make_ws(f"http://127.0.0.1:{port}/x.git", tmp_path, timeout_s=1).prepare()
    assert time.monotonic() - started < 15
    assert processes_mentioning(f"127.0.0.1:{port}") == [], "git or its helper outlived the timeout"


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes containing ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        if text in args:
            found.append(args)
    return found


async def test_missing_base_ref(remote: Remote, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="base ref 'nope' not found"):
        await make_ws(remote, tmp_path, base_ref="nope").prepare()


async def test_publish_pushes_task_branch_and_leaves_main(remote: Remote, tmp_path: Path) -> None:
    ws = make_ws(remote, tmp_path)
    await ws.prepare()
    (ws.path / "README.md").write_text("# demo\nmore\n")
    (ws.path / "src" / "new.py").write_text("x = 1\n")
    (ws.path / "debug.log").write_text("ignored by .gitignore\n")
    result = await ws.publish("Add new.py")
    assert result.changed and result.branch == "handoff/t1"
    assert result.files_changed == ["README.md", "src/new.py"]
    assert result.head_sha == remote_sha(remote.bare, "refs/heads/handoff/t1")
    log = git("--git-dir", str(remote.bare), "log", "--format=%an <%ae>|%cn|%s", "handoff/t1")
    assert log.splitlines()[0] == "Handoff <handoff@localhost>|Handoff|Add new.py"
    assert remote_sha(remote.bare, "refs/heads/main") == remote.main_sha
    assert "diff --git a/src/new.py" in await ws.diff()


async def test_publish_without_changes_does_not_push(remote: Remote, tmp_path: Path) -> None:
    ws = make_ws(remote, tmp_path)
    await ws.prepare()
    (ws.path / "scratch.log").write_text("ignored\n")
    result = await ws.publish("nothing")
    assert not result.changed and result.files_changed == []
    assert result.head_sha == remote.main_sha
    assert remote_sha(remote.bare, "refs/heads/handoff/t1") is None


async def test_follow_up_run_continues_the_pushed_branch(remote: Remote, tmp_path: Path) -> None:
    first = make_ws(remote, tmp_path, run_id="run1")
    await first.prepare()
    (first.path / "a.txt").write_text("a\n")
    pushed = await first.publish("first")
    second = make_ws(remote, tmp_path, run_id="run2")
    await second.prepare()
    assert git("rev-parse", "HEAD", cwd=second.path) == pushed.head_sha == second.start_sha
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=second.path) == "handoff/t1"
    (second.path / "b.txt").write_text("b\n")
    result = await second.publish("second")
    assert result.files_changed == ["b.txt"]
    assert git("--git-dir", str(remote.bare), "rev-parse", "handoff/t1^") == pushed.head_sha


async def test_the_agent_gets_a_disposable_shallow_copy(remote: Remote, tmp_path: Path) -> None:
    ws = make_ws(remote, tmp_path)
    await ws.prepare()
    assert git("status", "--porcelain", cwd=ws.path) == ""
    assert git("log", "--format=%H", cwd=ws.path).split() == [remote.main_sha]
    assert git("remote", cwd=ws.path) == ""  # nothing points back at the host's repository
    (ws.path / "README.md").write_text("changed\n")
    assert git("status", "--porcelain", cwd=ws.path) == "M README.md"
    assert ws.git_dir.parent == ws.path.parent and not ws.git_dir.is_relative_to(ws.path)
    bare = make_ws(remote, tmp_path, run_id="run2", history_depth=0)
    await bare.prepare()
    assert not (bare.path / ".git").exists() and (bare.path / "README.md").exists()


@pytest.mark.parametrize("leave_uncommitted", [False, True], ids=["commits_only", "commits_and_edits"])
async def test_what_the_agent_committed_is_published_as_content(
    remote: Remote, tmp_path: Path, leave_uncommitted: bool
) -> None:
    ws = make_ws(remote, tmp_path)
    await ws.prepare()
    (ws.path / "agent.txt").write_text("by agent\n")
    git("add", "agent.txt", cwd=ws.path)
    git("commit", "-q", "-m", "agent commit", cwd=ws.path)
    if leave_uncommitted:
        (ws.path / "later.txt").write_text("uncommitted\n")
    result = await ws.publish("wrap up")
    assert result.changed
    assert result.files_changed == (["agent.txt", "later.txt"] if leave_uncommitted else ["agent.txt"])
    assert result.head_sha == remote_sha(remote.bare, "refs/heads/handoff/t1")
    # One commit by Handoff on the start commit: the agent's own commit objects never leave its copy.
    assert git("--git-dir", str(remote.bare), "rev-parse", "handoff/t1^") == remote.main_sha
    assert git("--git-dir", str(remote.bare), "log", "-1", "--format=%s", "handoff/t1") == "wrap up"


@pytest.mark.parametrize("rewrite", ["amend", "other_branch", "reset_to_root"])
async def test_history_edits_in_the_agent_copy_cannot_rewrite_the_branch(
    remote: Remote, tmp_path: Path, rewrite: str
) -> None:
    first = make_ws(remote, tmp_path, run_id="run1")
    await first.prepare()
    (first.path / "a.txt").write_text("a\n")
    pushed = await first.publish("first")
    second = make_ws(remote, tmp_path, run_id="run2")
    await second.prepare()
    if rewrite == "amend":
        (second.path / "a.txt").write_text("rewritten\n")
        git("commit", "-q", "-a", "--amend", "-m", "rewritten", cwd=second.path)
    elif rewrite == "other_branch":
        git("checkout", "-q", "--orphan", "elsewhere", cwd=second.path)
        (second.path / "c.txt").write_text("c\n")
    else:
        git("update-ref", "-d", "HEAD", cwd=second.path)
    result = await second.publish("edits")
    head = remote_sha(remote.bare, "refs/heads/handoff/t1")
    assert result.changed == (rewrite != "reset_to_root") and head == (result.head_sha or pushed.head_sha)
    # Whatever the agent did to its history, the branch only ever moves forward from the last push.
    git("--git-dir", str(remote.bare), "merge-base", "--is-ancestor", str(pushed.head_sha), "handoff/t1")
    assert remote_sha(remote.bare, "refs/heads/main") == remote.main_sha


async def test_push_is_never_forced_when_remote_moved(remote: Remote, tmp_path: Path) -> None:
    first = make_ws(remote, tmp_path, run_id="run1")
    await first.prepare()
    (first.path / "a.txt").write_text("a\n")
    await first.publish("first")
    second = make_ws(remote, tmp_path, run_id="run2")
    await second.prepare()
    other = tmp_path / "other"  # someone else pushes to the branch during the run
    git("clone", "-q", "-b", "handoff/t1", str(remote.bare), str(other))
    (other / "o.txt").write_text("o\n")
    git("add", "-A", cwd=other)
    git("commit", "-q", "-m", "concurrent", cwd=other)
    git("push", "-q", "origin", "handoff/t1", cwd=other)
    theirs = git("rev-parse", "HEAD", cwd=other)
    (second.path / "b.txt").write_text("b\n")
    with pytest.raises(WorkspaceError, match="push of handoff/t1 was refused"):
        await second.publish("second")
    assert remote_sha(remote.bare, "refs/heads/handoff/t1") == theirs


@pytest.mark.parametrize(
    "branch",
    ["main", "feature/x", "handoff/a:refs/heads/main", "handoff/", "handoff/a..b", "-f", "handoff/x.lock"],
)
async def test_branch_outside_handoff_is_refused(remote: Remote, tmp_path: Path, branch: str) -> None:
    with pytest.raises(WorkspaceError, match="refusing branch"):
        await make_ws(remote, tmp_path, branch=branch).prepare()
    ws = make_ws(remote, tmp_path, run_id="run2")
    await ws.prepare()
    ws.branch = branch  # changed after prepare: publish checks again before pushing
    (ws.path / "x.txt").write_text("x\n")
    with pytest.raises(WorkspaceError, match="refusing branch"):
        await ws.publish("x")
    heads = git("--git-dir", str(remote.bare), "for-each-ref", "--format=%(refname)", "refs/heads")
    assert heads.split() == ["refs/heads/main", "refs/heads/release"]
    assert remote_sha(remote.bare, "refs/heads/main") == remote.main_sha


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
async def test_checkout_is_chowned_to_sandbox_user(remote: Remote, tmp_path: Path) -> None:
    ws = make_ws(remote, tmp_path)
    await ws.prepare()
    for p in (ws.path, ws.path / "src" / "app.py", ws.path / ".git" / "config", ws.path / ".git" / "objects"):
        assert (p.stat().st_uid, p.stat().st_gid) == (1000, 1000), p
    assert ws.spec_dir.stat().st_uid == 0
    # The source repository is not touched (no hardlinked objects handed to the sandbox user).
    assert {p.stat().st_uid for p in (remote.bare / "objects").rglob("*")} == {0}
    unowned = make_ws(remote, tmp_path, run_id="run2", sandbox_uid=None, sandbox_gid=None)
    await unowned.prepare()
    assert (unowned.path / "README.md").stat().st_uid == 0


async def test_planted_config_and_hooks_do_not_run(remote: Remote, tmp_path: Path) -> None:
    ws = make_ws(remote, tmp_path)
    await ws.prepare()
    marker = tmp_path / "pwned"
    # A clean filter runs on `git add`, a post-commit hook even with --no-verify: both as root.
    with (ws.path / ".git" / "config").open("a") as f:
        f.write(f'[filter "evil"]\n\tclean = "touch {marker}-filter; cat"\n[core]\n\thooksPath = hooks\n')
    (ws.path / ".gitattributes").write_text("*.txt filter=evil\n")
    for name in ("post-commit", "reference-transaction"):
        hook = ws.path / ".git" / "hooks" / name
        hook.write_text(f"#!/bin/sh\ntouch {marker}-{name}\n")
        hook.chmod(0o755)
    (ws.path / "x.txt").write_text("x\n")
    assert (await ws.publish("x")).changed
    assert list(tmp_path.glob("pwned*")) == []
    assert remote_sha(remote.bare, "refs/heads/handoff/t1")


@pytest.fixture
def recorded_execs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[str, ...], dict[str, str]]]:
    """Every (argv, env) GitWorkspace hands to create_subprocess_exec."""
    calls: list[tuple[tuple[str, ...], dict[str, str]]] = []
    real = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        calls.append((tuple(map(str, args)), dict(kwargs.get("env") or {})))
        return await real(*args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    return calls


async def test_auth_header_stays_out_of_argv_and_errors(
    remote: Remote, tmp_path: Path, recorded_execs: list[tuple[tuple[str, ...], dict[str, str]]]
) -> None:
    # The remote echoes the secret back while refusing the push; the error must not repeat it.
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho 'leak {TOKEN} {AUTH_HEADER}' >&2\nexit 1\n")
    hook.chmod(0o755)
    ws = make_ws(remote, tmp_path, auth_header=AUTH_HEADER)
    await ws.prepare()
    (ws.path / "x.txt").write_text("x\n")
    with pytest.raises(WorkspaceError, match=r"refused.*leak \*\*\*") as err:
        await ws.publish("x")
    assert TOKEN not in str(err.value) and AUTH_HEADER.split()[-1] not in str(err.value)
    assert recorded_execs and all(
        TOKEN not in " ".join(argv) and AUTH_HEADER not in " ".join(argv) for argv, _ in recorded_execs
    )
    # The header travels only with the commands that talk to the remote.
    talking = [
        env for argv, env in recorded_execs if {"clone", "push"} & set(argv) and str(remote.bare) in argv
    ]
    assert len(talking) == 2 and all(env["GIT_CONFIG_VALUE_0"] == AUTH_HEADER for env in talking)
    assert all(
        "GIT_CONFIG_VALUE_0" not in env
        for argv, env in recorded_execs
        if not ({"clone", "push", "fetch"} & set(argv) and str(remote.bare) in argv)
    )


async def test_a_refreshed_auth_header_is_used_for_the_push_and_scrubbed(
    remote: Remote, tmp_path: Path, recorded_execs: list[tuple[tuple[str, ...], dict[str, str]]]
) -> None:
    fresh_token = "ghs_freshFRESHfresh0123456789"
    fresh = f"AUTHORIZATION: bearer {fresh_token}"
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho 'leak {TOKEN} {fresh_token}' >&2\nexit 1\n")
    hook.chmod(0o755)
    ws = make_ws(remote, tmp_path, auth_header=AUTH_HEADER)
    await ws.prepare()
    ws.set_auth_header(fresh)  # the run outlived its first token
    (ws.path / "x.txt").write_text("x\n")
    with pytest.raises(WorkspaceError) as err:
        await ws.publish("x")
    assert TOKEN not in str(err.value) and fresh_token not in str(err.value)
    pushes = [env for argv, env in recorded_execs if "push" in argv]
    assert pushes and all(env["GIT_CONFIG_VALUE_0"] == fresh for env in pushes)


@pytest.fixture
def http_remote() -> Iterator[tuple[str, list[str | None]]]:
    """A loopback HTTP server refusing every request with 403 and recording Authorization."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/org/repo.git", seen
    server.shutdown()
    server.server_close()
    thread.join()


async def test_auth_header_reaches_http_remote_but_not_the_error(
    tmp_path: Path, http_remote: tuple[str, list[str | None]]
) -> None:
    url, seen = http_remote
    with pytest.raises(WorkspaceError, match="failed") as err:
        await make_ws(url, tmp_path, auth_header=AUTH_HEADER).prepare()
    assert seen and seen[0] == AUTH_HEADER.partition(": ")[2]
    assert TOKEN not in str(err.value) and AUTH_HEADER.split()[-1] not in str(err.value)


async def test_diff_is_truncated_to_max_bytes(remote: Remote, tmp_path: Path) -> None:
    ws = make_ws(remote, tmp_path)
    await ws.prepare()
    (ws.path / "big.txt").write_text("é" * 5000)
    await ws.publish("big")
    short = await ws.diff(max_bytes=101)
    assert len(short.encode()) <= 101 and short.endswith("[diff truncated]\n")
    assert "big.txt" in short


async def test_cleanup_removes_run_dir(remote: Remote, tmp_path: Path) -> None:
    ws = make_ws(remote, tmp_path)
    await ws.prepare()
    await ws.cleanup()
    assert not ws.path.parent.exists() and (tmp_path / "work").is_dir()
    await ws.cleanup()  # already gone: no error
