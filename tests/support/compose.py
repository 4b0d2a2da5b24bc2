"""Base images for the compose test, built here because no image registry is reachable.

``handoff-test/debian`` is a debootstrapped bookworm (python3, git, ca-certificates) brought in
with ``docker import``, carrying this machine's CA certificates so that builds on it trust the
same TLS proxy the host does. PostgreSQL and Redis are built on it from Debian's packages
(``tests/data/compose/``). Each tag carries a hash of its recipe: an unchanged recipe is reused
from the engine, so only the first run pays (a minute or two).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from pathlib import Path

import docker
import docker.errors

from jobs.image import debootstrap, image_exists

RECIPES = Path(__file__).resolve().parent.parent / "data" / "compose"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# Contents never worth importing (the engine mounts its own) or only bloat.
_SKIP = ("./proc/", "./sys/", "./dev/", "./run/", "./tmp/", "./var/cache/apt/", "./var/lib/apt/lists/")


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()[:10]


def debian_base(client: docker.DockerClient) -> str:
    """The offline Debian base (tagged by the CA bundle it carries); imported once."""
    ca = HOST_CA.read_bytes() if HOST_CA.is_file() else b""
    tag = f"handoff-test/debian:bookworm-{_digest(b'v1', ca)}"
    if image_exists(client, tag):
        return tag
    cached = Path(os.environ.get("HANDOFF_DEBIAN_ROOTFS", "/var/cache/handoff/debian-rootfs"))
    with tempfile.TemporaryDirectory(prefix="handoff-compose-base-") as tmp:
        rootfs = cached
        if not (cached / "usr" / "bin" / "python3").exists():
            rootfs = Path(tmp) / "rootfs"
            debootstrap(rootfs)
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            replaced = {"./etc/ssl/certs/ca-certificates.crt", "./usr/local/share/ca-certificates/host.crt"}

            def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
                name = "./" + info.name.removeprefix("./")
                return None if name in replaced or any(name.startswith(p) for p in _SKIP) else info

            tar.add(str(rootfs), arcname=".", filter=keep)
            for where in ("etc/ssl/certs/ca-certificates.crt", "usr/local/share/ca-certificates/host.crt"):
                info = tarfile.TarInfo(where)
                info.size, info.mode = len(ca), 0o644
                tar.addfile(info, fileobj=_Bytes(ca))
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(
            str(tar_path),
            repository=repository,
            tag=version,
            changes=[
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                'CMD ["bash"]',
            ],
        )
    if not image_exists(client, tag):
        raise RuntimeError(f"docker import of {tag} failed")
    return tag


class _Bytes:
    """A minimal file object over bytes, for tarfile."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk, self.pos = self.data[self.pos : end], min(end, len(self.data))
        return chunk


def service_image(client: docker.DockerClient, name: str, version: str, base: str) -> str:
    """``handoff-test/NAME:VERSION-<hash>`` from ``tests/data/compose/NAME.Dockerfile`` on ``base``."""
    recipe = b"".join(p.read_bytes() for p in sorted(RECIPES.glob(f"{name}*")))
    tag = f"handoff-test/{name}:{version}-{_digest(recipe, base.encode())}"
    if image_exists(client, tag):
        return tag
    try:
        client.images.build(
            path=str(RECIPES),
            dockerfile=f"{name}.Dockerfile",
            tag=tag,
            buildargs={"BASE": base},
            network_mode="host",  # the engine has no bridge: apt reaches the mirror as the host does
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        log = "".join(str(chunk.get("stream", "")) for chunk in exc.build_log)
        raise RuntimeError(f"building {tag} failed: {exc}\n{log[-3000:]}") from exc
    return tag
