"""Offline sandbox images: the root filesystems we assemble and the images the engine imports."""

from __future__ import annotations

import io
import os
import shutil
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from jobs.image import (
    build_offline,
    debian_rootfs_tar,
    debootstrap,
    find_busybox,
    image_exists,
    is_static_elf,
    minimal_rootfs_tar,
)


def test_busybox_is_found_and_static() -> None:
    assert is_static_elf(find_busybox())
    assert not is_static_elf(Path(sys.executable).resolve())  # CPython links libc dynamically
    assert not is_static_elf(Path(__file__))


def test_minimal_rootfs_layout() -> None:
    buf = io.BytesIO()
    minimal_rootfs_tar(buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = {m.name: m for m in tar.getmembers()}
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
        group = tar.extractfile("etc/group").read().decode()  # type: ignore[union-attr]
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["bin/ls"].issym() and members["usr/bin"].linkname == "../bin"
    assert "agent:x:1000:1000:Handoff agent:/tmp:/bin/sh" in passwd.splitlines()
    assert "agent:x:1000:" in group.splitlines()
    assert members["tmp"].mode == 0o1777 and members["handoff"].isdir()
    assert (members["workspace"].uid, members["workspace"].gid) == (1000, 1000)


def test_debian_rootfs_tar_adds_agent_without_touching_the_tree(tmp_path: Path) -> None:
    tree = tmp_path / "rootfs"
    for d in ("etc", "dev", "tmp/junk", "usr/bin", "var/lib/apt/lists"):
        (tree / d).mkdir(parents=True)
    (tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tree / "etc/group").write_text("root:x:0:\n")
    (tree / "dev/null").write_text("not a device")
    (tree / "var/lib/apt/lists/big").write_text("index")
    (tree / "usr/bin/python3").write_text("#!")
    buf = io.BytesIO()
    debian_rootfs_tar(buf, tree)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        names = tar.getnames()
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
    assert "agent:x:1000:1000:Handoff agent:/tmp:/bin/bash" in passwd.splitlines()
    assert names.count("etc/passwd") == 1 and "usr/bin/python3" in names and "dev" in names
    assert not {"dev/null", "tmp/junk", "var/lib/apt/lists/big"} & set(names)
    assert {"workspace", "handoff", "tmp"} <= set(names)
    assert "agent" not in (tree / "etc/passwd").read_text()


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(
        base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"), version="1.41"
    )
    try:
        c.ping()
    except Exception as exc:
        c.close()
        pytest.skip(f"no Docker engine: {exc}")
    yield c
    c.close()


def test_build_minimal_is_fast_runs_as_agent_and_rebuilds_in_place(client: docker.DockerClient) -> None:
    tag = f"handoff-sandbox:test-{uuid.uuid4().hex[:8]}"  # not the shared tag other tests use
    try:
        t0 = time.monotonic()
        assert build_offline(client, "minimal", tag) == tag
        assert time.monotonic() - t0 < 10
        assert image_exists(client, tag)
        config = client.images.get(tag).attrs["Config"]
        assert config["User"] == "1000:1000" and config["WorkingDir"] == "/workspace"
        assert {"HOME=/tmp", "PATH=/bin:/usr/bin"} <= set(config["Env"])
        out = client.containers.run(
            tag, ["sh", "-c", "id -u; echo $HOME; pwd; ls /usr/bin/env"], remove=True, network_mode="none"
        )
        assert out.decode().split() == ["1000", "/tmp", "/workspace", "/usr/bin/env"]

        first = client.images.get(tag).id
        build_offline(client, "minimal", tag)
        assert client.images.get(tag).id != first
        with pytest.raises(docker.errors.ImageNotFound):  # the untagged old image was dropped
            client.images.get(str(first))
    finally:
        if image_exists(client, tag):
            client.images.remove(tag, force=True)
    assert not image_exists(client, tag)


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    """A debootstrap tree: ``HANDOFF_DEBIAN_ROOTFS``, or made once (~45 s) and kept in /var/cache."""
    given = os.environ.get("HANDOFF_DEBIAN_ROOTFS")
    if given:
        return Path(given)
    target = Path("/var/cache/handoff/debian-rootfs")
    if not (target / "usr/bin/python3").exists():
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        debootstrap(target)
    return target


def test_build_debian_variant(client: docker.DockerClient, debian_rootfs: Path) -> None:
    tag = f"handoff-sandbox:test-debian-{uuid.uuid4().hex[:8]}"
    try:
        build_offline(client, "debian", tag, rootfs=debian_rootfs)
        script = "id -un; git --version; python3 -c 'print(1)'; rg --version | head -1"
        out = client.containers.run(tag, ["sh", "-c", script], remove=True, network_mode="none").decode()
        assert out.startswith("agent\ngit version") and "\n1\nripgrep" in out
    finally:
        if image_exists(client, tag):
            client.images.remove(tag, force=True)
