#!/usr/bin/env bash
# `make test`: install what is missing, start the services that do not answer, build the offline
# sandbox image, run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
HANDOFF_BOOTSTRAP_TEST=1 bash scripts/bootstrap.sh
export PATH="$HOME/.local/bin:$PATH"
source scripts/services.sh
trap stop_services EXIT
uv run --frozen handoff sandbox build --offline --variant minimal >/dev/null
# The Debian variant (python3, git, ripgrep) for the agent tests: debootstrap once (~45 s), cached.
export HANDOFF_DEBIAN_ROOTFS=${HANDOFF_DEBIAN_ROOTFS:-/var/cache/handoff/debian-rootfs}
if [ ! -x "$HANDOFF_DEBIAN_ROOTFS/usr/bin/python3" ]; then
  echo "debootstrap: building the Debian sandbox root filesystem in $HANDOFF_DEBIAN_ROOTFS"
  rm -rf "$HANDOFF_DEBIAN_ROOTFS"; mkdir -p "$(dirname "$HANDOFF_DEBIAN_ROOTFS")"
  uv run --frozen python -c "import sys; from pathlib import Path; from jobs.image import debootstrap; debootstrap(Path(sys.argv[1]))" "$HANDOFF_DEBIAN_ROOTFS"
fi
# The Claude Code and Codex images (npm + Debian's nodejs on that root, ~30 s each), tagged by the
# hash of their recipe: rebuilt only when it changes.
uv run --frozen python -m jobs.agent_image >/dev/null
status=0
uv run --frozen pytest "$@" || status=$?
exit $status
