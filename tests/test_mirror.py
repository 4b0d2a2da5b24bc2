"""The per-host mirror cache with real git: shared by runs, incremental, self-healing, bounded."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from core.errors import WorkspaceError
from jobs.mirror import MirrorCache, disk_usage, mirror_key
from jobs.workspace import GitWorkspace
from tests.support.env import git


def commit(seed: Path, name: str) -> str:
    (seed / name).write_text(f"{name}\n")
    git("add", "-A", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", name, cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    return git("rev-parse", "HEAD", cwd=seed)


@pytest.fixture
def seed(bare_repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / "pusher"
    git("clone", "-q", str(bare_repo), str(path))
    return path


def ws(bare_repo: Path, tmp_path: Path, cache: MirrorCache, run_id: str, task: str = "t1") -> GitWorkspace:
    return GitWorkspace(str(bare_repo), tmp_path / "work", task, run_id, mirrors=cache)


async def test_runs_share_one_mirror_and_see_new_commits(bare_repo: Path, seed: Path, tmp_path: Path) -> None:
    cache = MirrorCache(tmp_path / "mirrors", max_bytes=10**9)
    first = ws(bare_repo, tmp_path, cache, "r1")
    await first.prepare()
    mirror = tmp_path / "mirrors" / f"{mirror_key(str(bare_repo))}.git"
    alternates = (first.git_dir / "objects" / "info" / "alternates").read_text().strip()
    assert Path(alternates) == mirror / "objects"
    head = commit(seed, "second.txt")
    second = ws(bare_repo, tmp_path, cache, "r2", task="t2")
    await second.prepare()
    assert second.start_sha == head and (second.path / "second.txt").exists()
    assert sorted(p.name for p in (tmp_path / "mirrors").glob("*.git")) == [mirror.name]
    # The agent's copy stands alone: no path to the mirror or the host repository inside it.
    assert not (second.path / ".git" / "objects" / "info" / "alternates").exists()
    assert git("status", "--porcelain", cwd=second.path) == ""
    (second.path / "more.txt").write_text("more\n")
    pushed = await second.publish("more")
    assert pushed.changed and git("--git-dir", str(bare_repo), "rev-parse", "handoff/t2^") == head
    for w in (first, second):
        await w.cleanup()


async def test_concurrent_runs_lease_one_mirror(bare_repo: Path, tmp_path: Path) -> None:
    cache = MirrorCache(tmp_path / "mirrors", max_bytes=10**9)
    runs = [ws(bare_repo, tmp_path, cache, f"r{i}", task=f"t{i}") for i in range(6)]
    await asyncio.gather(*(r.prepare() for r in runs))
    assert len({r.start_sha for r in runs}) == 1
    assert len(list((tmp_path / "mirrors").glob("*.git"))) == 1
    assert not list((tmp_path / "mirrors").glob("*.tmp-*"))
    await asyncio.gather(*(r.cleanup() for r in runs))


async def test_a_mirror_git_cannot_fetch_into_is_cloned_again(
    bare_repo: Path, seed: Path, tmp_path: Path
) -> None:
    cache = MirrorCache(tmp_path / "mirrors", max_bytes=10**9)
    lease = await cache.lease(str(bare_repo), None)
    lease.release()
    # A worker died mid-fetch: git's ref lock stays behind, and every later fetch would fail.
    (lease.path / "refs" / "heads").mkdir(parents=True, exist_ok=True)
    (lease.path / "refs" / "heads" / "main.lock").write_text("")
    head = commit(seed, "after-crash.txt")
    run = ws(bare_repo, tmp_path, cache, "r1")
    await run.prepare()
    assert run.start_sha == head
    await run.cleanup()


async def test_an_unknown_repository_is_reported_and_leaves_no_mirror(tmp_path: Path) -> None:
    cache = MirrorCache(tmp_path / "mirrors", max_bytes=10**9)
    missing = tmp_path / "nowhere.git"
    missing.mkdir()
    run = GitWorkspace(str(missing), tmp_path / "work", "t1", "r1", mirrors=cache)
    with pytest.raises(WorkspaceError, match="repository not found"):
        await run.prepare()
    await run.cleanup()
    assert list((tmp_path / "mirrors").glob("*.git")) == [] and not list(
        (tmp_path / "mirrors").glob("*.tmp-*")
    )


async def test_eviction_takes_the_least_recently_used_mirror_no_run_holds(tmp_path: Path) -> None:
    repos = []
    for name in ("a", "b", "c"):
        bare = tmp_path / f"{name}.git"
        git("init", "-q", "--bare", "-b", "main", str(bare))
        seed = tmp_path / f"seed-{name}"
        git("clone", "-q", str(bare), str(seed))
        (seed / "big.bin").write_bytes(os.urandom(200_000))
        git("add", "-A", cwd=seed)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", name, cwd=seed)
        git("push", "-q", "origin", "main", cwd=seed)
        repos.append(bare)
    cache = MirrorCache(tmp_path / "mirrors", max_bytes=10**9)
    held = await cache.lease(str(repos[0]), None)  # a run is using "a"
    for bare in repos[1:]:
        (await cache.lease(str(bare), None)).release()
    old = time.time() - 3600
    for mirror in (tmp_path / "mirrors").glob("*.git"):
        os.utime(mirror / "handoff-last-used", (old, old))
    b, c = (tmp_path / "mirrors" / f"{mirror_key(str(r))}.git" for r in repos[1:])
    os.utime(c / "handoff-last-used", (old + 60, old + 60))  # c was used after b
    a = held.path
    cache.max_bytes = disk_usage(a) + disk_usage(c) + 1000  # room for two of the three
    assert cache.evict() == [b.name]
    assert held.path.exists() and c.exists()
    cache.max_bytes = 1
    assert cache.evict() == [c.name]  # "a" stays while its run holds it
    held.release()
    assert cache.evict() == [a.name]
