"""Offline sandbox images: built on the host and brought in with ``docker import`` (no registry).

``minimal`` is a static busybox with one symlink per applet, an ``agent`` user (1000:1000) and the
directories the sandbox mounts over; it is assembled as a tar stream in memory and takes seconds.
``debian`` is a debootstrap'ed bookworm with git, python3 and ripgrep, equivalent to
``docker/sandbox.Dockerfile`` for machines that can reach a registry.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors

from core.errors import SandboxError

Variant = Literal["minimal", "debian"]
DEFAULT_TAGS: dict[str, str] = {"minimal": "handoff-sandbox:minimal", "debian": "handoff-sandbox:debian"}
AGENT_UID = AGENT_GID = 1000
DEBIAN_PACKAGES = ("git", "python3", "ripgrep", "ca-certificates", "bash")

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"
_AGENT_PASSWD = f"agent:x:{AGENT_UID}:{AGENT_GID}:Handoff agent:/tmp:/bin/sh\n"
_AGENT_GROUP = f"agent:x:{AGENT_GID}:\n"
# Paths whose contents never belong in an image (the engine mounts its own) or only bloat it.
_SKIP_CONTENTS = ("dev/", "proc/", "sys/", "run/", "tmp/", "var/cache/apt/", "var/lib/apt/lists/")


def _changes(path: str) -> list[str]:
    """Dockerfile instructions applied by ``docker import``."""
    return [f"USER {AGENT_UID}:{AGENT_GID}", "WORKDIR /workspace", f"ENV PATH={path}", "ENV HOME=/tmp"]


def is_static_elf(path: Path) -> bool:
    """True when ``path`` is an ELF executable without a program interpreter (statically linked)."""
    with path.open("rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF":
            return False
        wide, endian = head[4] == 2, "<" if head[5] == 1 else ">"
        if wide:
            (phoff,) = struct.unpack_from(endian + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
        else:
            (phoff,) = struct.unpack_from(endian + "I", head, 28)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    # PT_INTERP (3) names the dynamic loader: a static binary has none.
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != 3 for i in range(phnum))


def find_busybox() -> Path:
    """A statically linked busybox on the host (Debian's ``busybox-static``)."""
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and Path(candidate).is_file() and is_static_elf(Path(candidate)):
            return Path(candidate).resolve()
    raise SandboxError("no statically linked busybox found; install busybox-static")


def _entry(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.size = kind, mode, uid, gid, size
    info.mtime = int(time.time())
    return info


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    tar.addfile(_entry(name, tarfile.REGTYPE, mode, size=len(data)), io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755, owner: int = 0) -> None:
    tar.addfile(_entry(name, tarfile.DIRTYPE, mode, owner, owner))


def _add_sandbox_dirs(tar: tarfile.TarFile) -> None:
    _add_dir(tar, "tmp", 0o1777)
    _add_dir(tar, "workspace", 0o755, AGENT_UID)
    _add_dir(tar, "handoff", 0o755)


def minimal_rootfs_tar(out: io.BufferedIOBase | io.BytesIO, busybox: Path | None = None) -> None:
    """Write the ``minimal`` root filesystem as a tar to ``out``."""
    binary = busybox or find_busybox()
    listing = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True).stdout
    applets = sorted({a for a in listing.split() if a and "/" not in a and a != "busybox"})
    with tarfile.open(fileobj=out, mode="w") as tar:
        for d in ("bin", "etc", "usr", "proc", "sys", "dev", "root"):
            _add_dir(tar, d, 0o700 if d == "root" else 0o755)
        _add_file(tar, "bin/busybox", binary.read_bytes(), 0o755)
        for applet in applets:  # includes sh, so /bin/sh exists
            link = _entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777)
            link.linkname = "busybox"
            tar.addfile(link)
        for alias, target in (("usr/bin", "../bin"), ("sbin", "bin"), ("usr/sbin", "../bin")):
            link = _entry(alias, tarfile.SYMTYPE, 0o777)
            link.linkname = target  # scripts may say #!/usr/bin/env
            tar.addfile(link)
        _add_file(tar, "etc/passwd", (_PASSWD + _AGENT_PASSWD).encode())
        _add_file(tar, "etc/group", (_GROUP + _AGENT_GROUP).encode())
        _add_sandbox_dirs(tar)


def debian_rootfs_tar(out: io.BufferedIOBase | io.BytesIO, rootfs: Path) -> None:
    """Write ``rootfs`` (a debootstrap tree) plus the agent user and sandbox dirs as a tar to ``out``.

    The tree itself is left untouched: passwd and group are rewritten inside the tar only.
    """
    etc = rootfs / "etc"
    passwd = (etc / "passwd").read_text()
    group = (etc / "group").read_text()
    if f":{AGENT_UID}:" not in passwd:
        passwd += _AGENT_PASSWD.replace("/bin/sh", "/bin/bash")
    if f":{AGENT_GID}:" not in group:
        group += _AGENT_GROUP
    replaced = {"etc/passwd", "etc/group", "tmp", "workspace", "handoff"}

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name
        if name in replaced or any(name.startswith(p) and name != p.rstrip("/") for p in _SKIP_CONTENTS):
            return None
        return info

    with tarfile.open(fileobj=out, mode="w") as tar:
        for child in sorted(rootfs.iterdir()):
            tar.add(str(child), arcname=child.name, recursive=True, filter=keep)
        _add_file(tar, "etc/passwd", passwd.encode())
        _add_file(tar, "etc/group", group.encode())
        _add_sandbox_dirs(tar)


def debootstrap(target: Path, suite: str = "bookworm") -> None:
    """Create a minbase Debian root filesystem with the sandbox's packages in ``target``."""
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is not installed")
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", suite, str(target)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"debootstrap failed ({proc.returncode}): {proc.stderr[-2000:]}")


@contextmanager
def _client(client_or_base_url: docker.DockerClient | str | None) -> Iterator[docker.DockerClient]:
    if isinstance(client_or_base_url, docker.DockerClient):
        yield client_or_base_url
        return
    if client_or_base_url is None:
        client = docker.DockerClient.from_env(version="1.41")
    else:
        client = docker.DockerClient(base_url=client_or_base_url, version="1.41")
    try:
        yield client
    finally:
        client.close()


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    """True when the engine has an image called ``tag``."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def import_rootfs(
    client: docker.DockerClient,
    tar_path: Path,
    tag: str,
    path_env: str,
    extra_changes: list[str] | None = None,
) -> None:
    """``docker import`` the root filesystem tar at ``tar_path`` as ``tag`` (replacing it)."""
    repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
    try:
        previous: str | None = client.images.get(tag).id
    except docker.errors.ImageNotFound:
        previous = None
    result: Any = client.api.import_image_from_file(
        str(tar_path), repository=repository, tag=version, changes=_changes(path_env) + (extra_changes or [])
    )
    # The engine reports failures inside a 200 response body.
    if isinstance(result, str) and '"error"' in result:
        raise SandboxError(f"docker import of {tag} failed: {result[-2000:]}")
    current = client.images.get(tag).id
    if previous and previous != current:
        # The old image lost its tag: drop it unless a container still uses it.
        with suppress(docker.errors.APIError):
            client.images.remove(previous)


def build_offline(
    client_or_base_url: docker.DockerClient | str | None = None,
    variant: Variant = "minimal",
    tag: str | None = None,
    *,
    rootfs: Path | None = None,
    busybox: Path | None = None,
) -> str:
    """Build the ``variant`` sandbox image without a registry and return its tag.

    ``rootfs`` reuses an existing debootstrap tree for ``debian`` (otherwise one is made in a
    temporary directory, which needs root and a Debian mirror). Rebuilding replaces the tag.
    """
    if variant not in DEFAULT_TAGS:
        raise SandboxError(f"unknown sandbox image variant {variant!r}")
    tag = tag or DEFAULT_TAGS[variant]
    with _client(client_or_base_url) as client, tempfile.TemporaryDirectory(prefix="handoff-image-") as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        with tar_path.open("wb") as out:
            if variant == "minimal":
                minimal_rootfs_tar(out, busybox)
                path_env = "/bin:/usr/bin"
            else:
                tree = rootfs
                if tree is None or not (tree / "etc" / "passwd").is_file():
                    tree = tree or Path(tmp) / "rootfs"
                    debootstrap(tree)
                debian_rootfs_tar(out, tree)
                path_env = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        try:
            import_rootfs(client, tar_path, tag, path_env)
        except docker.errors.APIError as exc:
            raise SandboxError(f"docker import of {tag} failed: {exc.explanation or exc}") from exc
    return tag


def main() -> None:  # pragma: no cover - a convenience for operators: python -m jobs.image [variant]
    """Build the sandbox image named on the command line (``minimal`` by default)."""
    import sys

    variant: Any = sys.argv[1] if len(sys.argv) > 1 else "minimal"
    rootfs = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    print(build_offline(os.environ.get("DOCKER_HOST"), variant, rootfs=rootfs))


if __name__ == "__main__":  # pragma: no cover
    main()
