"""Offline images for the real agent CLIs: Claude Code and Codex, on the Debian sandbox root.

No registry is needed: the cached debootstrap tree (``handoff sandbox build --offline --variant
debian``) is copied, Debian's ``nodejs`` is installed into the copy (``chroot … apt-get``), the
CLI's npm package is installed into it with the host's npm (pinned version), a small launcher is
added, and the tree is brought in with ``docker import``. That is the same image the Dockerfiles
in ``docker/agents/`` describe for machines with a registry.

Builds take a minute and ~1 GB of disk, so images are tagged by content: the tag's suffix is a
hash of the recipe (package, version, Debian packages, environment, launcher, this module) and of
the base tree's package list. A build whose tag exists is a no-op apart from re-pointing the short
tag (``handoff-agent:claude-code``) at it, so ``make test`` rebuilds only when the recipe changes.

The CLIs' own telemetry, error reporting and update checks are switched off with their documented
environment variables; anything that still tries the network finds none (the sandbox's network
is ``none``), or the egress proxy, which refuses and records it.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from core.errors import SandboxError
from jobs.image import AGENT_GID, AGENT_UID, debian_rootfs_tar, image_exists, import_rootfs

DEFAULT_ROOTFS = Path(os.environ.get("HANDOFF_DEBIAN_ROOTFS", "/var/cache/handoff/debian-rootfs"))
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Codex reads its model provider from config.toml: this launcher (also used by
# docker/agents/codex.Dockerfile) points it at the run's gateway and runs `codex exec`.
CODEX_LAUNCHER = Path(__file__).parent / "gateway" / "handoff-codex"


@dataclass(frozen=True)
class AgentRecipe:
    """How one CLI's image is made."""

    name: str
    package: str
    version: str
    command: str  # what must run (``--version``) for the build to count
    env: dict[str, str] = field(default_factory=dict)
    launchers: dict[str, str] = field(default_factory=dict)  # /usr/local/bin/<name> -> script
    debian: tuple[str, ...] = ("nodejs",)

    @property
    def repository(self) -> str:
        return "handoff-agent"

    @property
    def alias(self) -> str:
        """The stable tag profiles name (``handoff-agent:claude-code``)."""
        return f"{self.repository}:{self.name}"


RECIPES: dict[str, AgentRecipe] = {
    "claude-code": AgentRecipe(
        name="claude-code",
        package="@anthropic-ai/claude-code",
        version="2.1.332",
        command="claude",
        env={
            # https://docs.anthropic.com/en/docs/claude-code/settings#environment-variables
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_BUG_COMMAND": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        },
    ),
    "codex": AgentRecipe(
        name="codex",
        package="@openai/codex",
        version="0.171.0",
        command="codex",
        launchers={"handoff-codex": CODEX_LAUNCHER.read_text()},
    ),
}


def _base_fingerprint(rootfs: Path) -> str:
    status = rootfs / "var" / "lib" / "dpkg" / "status"
    return hashlib.sha256(status.read_bytes()).hexdigest() if status.is_file() else "no-dpkg-status"


def content_tag(recipe: AgentRecipe, rootfs: Path) -> str:
    """``handoff-agent:<name>-<hash>``: changes whenever anything that goes into the image does."""
    digest = hashlib.sha256()
    for part in (
        repr(recipe),
        inspect.getsource(sys.modules[__name__]),
        inspect.getsource(debian_rootfs_tar),
        _base_fingerprint(rootfs),
    ):
        digest.update(part.encode())
    return f"{recipe.repository}:{recipe.name}-{digest.hexdigest()[:12]}"


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise SandboxError(f"{what} failed ({proc.returncode}): {tail}")


def _prepare_tree(recipe: AgentRecipe, rootfs: Path, tree: Path) -> None:
    """Copy the Debian tree to ``tree`` and install the CLI into it."""
    _run(["cp", "-a", f"{rootfs}/.", str(tree)], "copying the Debian root filesystem")
    shutil.copy("/etc/resolv.conf", tree / "etc" / "resolv.conf")  # apt in the chroot resolves
    apt_env = {"PATH": _PATH, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    _run(["chroot", str(tree), "apt-get", "update", "-q"], "apt-get update in the image", apt_env)
    install = ["chroot", str(tree), "apt-get", "install", "-y", "-q", "--no-install-recommends"]
    _run([*install, *recipe.debian], "apt-get install in the image", apt_env)
    _run(["chroot", str(tree), "apt-get", "clean"], "apt-get clean in the image", apt_env)
    npm = shutil.which("npm")
    if npm is None:
        raise SandboxError("building agent images needs npm on the host (apt-get install npm)")
    with tempfile.TemporaryDirectory(prefix="handoff-npm-") as cache:
        _run(
            [
                npm,
                "install",
                "--global",
                "--prefix",
                str(tree / "usr" / "local"),
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--cache",
                cache,
                f"{recipe.package}@{recipe.version}",
            ],
            f"npm install {recipe.package}@{recipe.version}",
            {**os.environ, "npm_config_update_notifier": "false"},
        )
    bin_dir = tree / "usr" / "local" / "bin"
    for name, script in recipe.launchers.items():
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    (tree / "etc" / "resolv.conf").write_text("")  # the sandbox has no network; nothing to resolve
    for d in ("workspace",):
        (tree / d).mkdir(exist_ok=True)
        os.chown(tree / d, AGENT_UID, AGENT_GID)
    version = subprocess.run(
        ["chroot", "--userspec", f"{AGENT_UID}:{AGENT_GID}", str(tree), recipe.command, "--version"],
        capture_output=True,
        text=True,
        env={"PATH": _PATH, "HOME": "/tmp", **recipe.env},
        timeout=120,
    )
    if version.returncode != 0 or recipe.version not in version.stdout:
        raise SandboxError(
            f"{recipe.command} --version in the image printed {version.stdout!r} {version.stderr[-500:]!r}"
        )


def build_agent_image(
    client: docker.DockerClient, name: str, rootfs: Path = DEFAULT_ROOTFS, *, force: bool = False
) -> str:
    """Build (or find) the image of agent ``name`` and point its short tag at it; return the tag."""
    recipe = RECIPES.get(name)
    if recipe is None:
        raise SandboxError(f"unknown agent image {name!r}; known: {', '.join(sorted(RECIPES))}")
    if not (rootfs / "etc" / "passwd").is_file():
        raise SandboxError(
            f"no Debian root filesystem at {rootfs} (build it: handoff sandbox build --offline --variant debian)"
        )
    tag = content_tag(recipe, rootfs)
    if force or not image_exists(client, tag):
        with tempfile.TemporaryDirectory(prefix=f"handoff-{name}-") as tmp:
            tree = Path(tmp) / "rootfs"
            tree.mkdir()
            _prepare_tree(recipe, rootfs, tree)
            tar_path = Path(tmp) / "rootfs.tar"
            with tar_path.open("wb") as out:
                debian_rootfs_tar(out, tree)
            changes = [f"ENV {key}={value}" for key, value in sorted(recipe.env.items())]
            import_rootfs(client, tar_path, tag, _PATH, extra_changes=changes)
    client.images.get(tag).tag(recipe.repository, recipe.name)
    _drop_older(client, recipe, tag)
    return tag


def _drop_older(client: docker.DockerClient, recipe: AgentRecipe, keep: str) -> None:
    """Remove this agent's images of earlier recipes (each is ~800 MB); ones in use stay."""
    for image in client.images.list(name=recipe.repository):
        tags = [t for t in image.tags if t.startswith(f"{recipe.alias}-")]
        if tags and keep not in image.tags and recipe.alias not in image.tags:
            for old in tags:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(old)


def main() -> None:  # pragma: no cover - used by scripts/test.sh and operators
    """``python -m jobs.agent_image [name ...]``: build the named agent images (default: all)."""
    names = sys.argv[1:] or sorted(RECIPES)
    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST"), version="1.41")
    try:
        for name in names:
            print(build_agent_image(client, name))
    finally:
        client.close()


if __name__ == "__main__":  # pragma: no cover
    main()
