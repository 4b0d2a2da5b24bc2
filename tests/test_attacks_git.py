"""Attacks on the host's git through what the agent writes: configuration, hooks, other
repositories, object stores, symlinks, nested repositories, special files, the worker's environment.

Each test first shows the attack working on the unguarded path (the same script in the same
sandbox image on a plain checkout, then a naive host ``git add/commit/push`` there), then runs it as
a real Handoff task and asserts on the host. See :mod:`tests.support.attacks`.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.settings import Settings
from jobs.worktree import is_dotgit
from tests.support.attacks import (
    CANARY,
    Guarded,
    Host,
    attack_settings,
    branch_of,
    guarded,
    in_sandbox_image,
    make_host,
    naive_publish,
    plain_checkout,
)
from tests.support.env import git


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return make_host(tmp_path / "host")


@pytest.fixture
def attack_config(sqlite_url: str, redis_url: str, tmp_path: Path, sandbox_image: str) -> Settings:
    return attack_settings(tmp_path, sqlite_url, redis_url)


@pytest.fixture
async def handoff(attack_config: Settings, host: Host) -> AsyncIterator[Guarded]:
    async for running in guarded(attack_config, host):
        yield running


# Every route by which git takes configuration or hooks from a repository's `.git`.
ROUTES = {
    "fsmonitor": 'printf "[core]\\n\\tfsmonitor = \\"touch {m}; false\\"\\n" >> .git/config',
    "hooks": (
        "for h in pre-commit post-commit reference-transaction post-index-change pre-push; do "
        'printf "#!/bin/sh\\ntouch {m}\\n" > .git/hooks/$h; chmod +x .git/hooks/$h; done'
    ),
    "hooks_path": (
        'mkdir -p evilhooks && printf "#!/bin/sh\\ntouch {m}\\n" > evilhooks/post-commit && '
        'chmod +x evilhooks/post-commit && printf "[core]\\n\\thooksPath = evilhooks\\n" >> .git/config'
    ),
    "filter": (
        'printf "[filter \\"x\\"]\\n\\tclean = \\"touch {m}; cat\\"\\n" >> .git/config && '
        'echo "*.txt filter=x" > .gitattributes && echo data > notes.txt'
    ),
    "include": (
        'printf "[core]\\n\\tfsmonitor = \\"touch {m}; false\\"\\n" > evil.cfg && '
        'printf "[include]\\n\\tpath = ../evil.cfg\\n" >> .git/config'
    ),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_planted_git_configuration_never_runs_on_the_host(
    host: Host, handoff: Guarded, route: str
) -> None:
    plain = plain_checkout(host, route)
    attack = ROUTES[route] + " && echo change > CHANGE.md"
    in_sandbox_image(plain, attack.format(m=host.marker(f"unguarded-{route}")))
    naive_publish(plain)
    assert host.markers() == [f"pwned-unguarded-{route}"], "the attack must work unguarded"
    host.marker(f"unguarded-{route}").unlink()

    workspaces = handoff.settings.handoff_workspace_dir
    task = await handoff.run(attack.format(m=host.marker(route)))
    assert task["state"] == "succeeded", task["state_reason"]
    assert host.markers() == []
    assert host.show(branch_of(task), "CHANGE.md") == "change"
    assert not list(workspaces.glob("*/repo")), "the run's checkout is removed"


REPLACED = {
    "gitfile": 'rm -rf .git && echo "gitdir: {other}" > .git',
    "symlink": "rm -rf .git && ln -s {other} .git",
    "commondir": 'echo "{other}" > .git/commondir',
}


@pytest.mark.parametrize("how", sorted(REPLACED))
async def test_a_replaced_git_dir_never_sends_a_commit_to_another_host_repository(
    host: Host, handoff: Guarded, how: str
) -> None:
    attack = REPLACED[how].format(other=host.other_git) + " && echo x > X.md"
    before = host.other_state()
    plain = plain_checkout(host, how)
    in_sandbox_image(plain, attack)
    naive_publish(plain)
    assert host.other_state() != before, "the attack must work unguarded"
    host.reset_other()
    before = host.other_state()

    task = await handoff.run(attack)
    assert task["state"] == "succeeded", task["state_reason"]
    assert host.other_state() == before
    assert host.show(branch_of(task), "X.md") == "x"


async def test_alternates_never_smuggle_a_host_repository_into_the_push(host: Host, handoff: Guarded) -> None:
    # Point the object store at a host repository and the branch at its commit (SHAs are no secret).
    attack = (
        f'echo "{host.other_git}/objects" > .git/objects/info/alternates && '
        'ref=$(sed "s/^ref: //" .git/HEAD) && mkdir -p ".git/$(dirname "$ref")" && '
        f'echo "{host.other_head}" > ".git/$ref" && echo y > Y.md'
    )
    plain = plain_checkout(host, "alternates")
    in_sandbox_image(plain, attack)
    naive_publish(plain)
    assert host.other_secret_sha in host.objects("refs/heads/unguarded"), "the attack must work unguarded"

    task = await handoff.run(attack)
    assert task["state"] == "succeeded", task["state_reason"]
    assert host.other_secret_sha not in host.objects(branch_of(task))
    assert CANARY not in git("--git-dir", str(host.origin), "log", "-p", branch_of(task))


async def test_a_hostile_worker_environment_never_reaches_host_git(
    host: Host, handoff: Guarded, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = {
        "GIT_CONFIG_PARAMETERS": f"'core.fsmonitor=touch {host.marker('env')}; false'",
        "GIT_DIR": str(host.other_git),
    }
    plain = plain_checkout(host, "env")
    (plain / "E.md").write_text("e\n")
    before = host.other_state()
    naive_publish(plain, env=hostile)
    assert host.marker("env").exists() and host.other_state() != before, "the attack must work unguarded"
    host.marker("env").unlink()
    host.reset_other()
    before = host.other_state()

    for name, value in hostile.items():  # the worker process itself now carries them
        monkeypatch.setenv(name, value)
    task = await handoff.run("echo z > Z.md")
    for name in hostile:
        monkeypatch.delenv(name)
    assert task["state"] == "succeeded", task["state_reason"]
    assert host.markers() == [] and host.other_state() == before
    assert host.show(branch_of(task), "Z.md") == "z"


async def test_symlinks_are_committed_as_links_never_followed(host: Host, handoff: Guarded) -> None:
    attack = f"ln -s {host.secret_file} leak.txt && ln -s {host.root} hostdir && ln -s / rootlink"
    plain = plain_checkout(host, "symlink")
    in_sandbox_image(plain, attack)
    # Unguarded: a host that copies the tree by reading paths reads its own files.
    assert CANARY in (plain / "leak.txt").read_text()
    assert (plain / "hostdir" / "secret.txt").exists()

    task = await handoff.run(attack)
    assert task["state"] == "succeeded", task["state_reason"]
    ref = branch_of(task)
    modes = {
        line.split("\t")[1]: line.split()[0]
        for line in git("--git-dir", str(host.origin), "ls-tree", ref).splitlines()
    }
    assert {modes["leak.txt"], modes["hostdir"], modes["rootlink"]} == {"120000"}
    assert host.show(ref, "leak.txt") == str(host.secret_file)
    assert CANARY not in git("--git-dir", str(host.origin), "log", "-p", ref)


async def test_nested_repositories_and_reserved_names_are_dropped(host: Host, handoff: Guarded) -> None:
    nested = f'mkdir -p sub && echo "gitdir: {host.other_git}" > sub/.git && echo s > sub/file.txt'
    plain = plain_checkout(host, "nested")
    in_sandbox_image(plain, nested + " && echo kept > kept.txt")
    naive_publish(plain)
    # Unguarded: git resolves the nested repository and records the host repository's HEAD.
    assert host.other_head in git("--git-dir", str(host.origin), "ls-tree", "-r", "refs/heads/unguarded")

    more = (
        "mkdir -p vendored/.git && echo c > vendored/.git/config && echo v > vendored/v.txt && "
        "mkdir -p .GIT deep && echo g > .GIT/config && echo g > deep/.GiT && echo kept > kept.txt"
    )
    task = await handoff.run(f"{nested} && {more}")
    assert task["state"] == "succeeded", task["state_reason"]
    files = host.files(branch_of(task))
    assert "kept.txt" in files
    dropped = [
        p
        for p in files
        if p.startswith(("sub/", "vendored/")) or any(is_dotgit(c.encode()) for c in p.split("/"))
    ]
    assert dropped == []
    assert host.other_head not in git("--git-dir", str(host.origin), "ls-tree", "-r", branch_of(task))
    stored = await handoff.events(task["runs"][-1]["id"])
    assert any("nested git repository" in str(e.data) for e in stored)


async def test_a_fifo_in_the_tree_cannot_block_the_host(host: Host, handoff: Guarded) -> None:
    attack = "mkfifo pipe && echo ok > ok.txt"
    plain = plain_checkout(host, "fifo")
    in_sandbox_image(plain, attack)
    # Unguarded: opening the path blocks for as long as nobody writes to the pipe.
    opened = threading.Event()

    def naive_read() -> None:
        with open(plain / "pipe", "rb") as f:
            f.read()
        opened.set()

    threading.Thread(target=naive_read, daemon=True).start()
    assert not opened.wait(1.0), "the attack must block an unguarded reader"
    with open(plain / "pipe", "wb"):  # release the blocked reader
        pass

    started = time.monotonic()
    task = await handoff.run(attack)
    assert task["state"] == "succeeded", task["state_reason"]
    assert time.monotonic() - started < 60
    files = host.files(branch_of(task))
    assert "ok.txt" in files and "pipe" not in files


async def test_directories_nested_thousands_deep_cannot_break_the_worker(
    host: Host, handoff: Guarded
) -> None:
    attack = (
        "i=0; while [ $i -lt 1500 ]; do mkdir a && cd a || exit 1; i=$((i+1)); done; echo deep > deep.txt"
    )
    plain = plain_checkout(host, "deep")
    in_sandbox_image(plain, attack)
    # Unguarded: the host's recursive clean-up gives up and leaves the agent's tree behind.
    with pytest.raises(RecursionError):
        shutil.rmtree(plain)
    subprocess.run(["rm", "-rf", str(plain)], check=True)

    task = await handoff.run(attack)
    assert task["state"] == "failed" and "deeper than" in (task["state_reason"] or "")
    workspaces = handoff.settings.handoff_workspace_dir
    assert not list(workspaces.glob("r_*")), "the run's directory is removed, however deep"
    after = await handoff.run("echo fine > F.md")  # the worker carries on
    assert after["state"] == "succeeded" and host.show(branch_of(after), "F.md") == "fine"
