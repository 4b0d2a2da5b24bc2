#!/usr/bin/env bash
# Install what is missing on a fresh Debian machine: system packages, uv, and the Python deps.
# Safe to run again: it only installs what is not there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v git >/dev/null || need+=(git)
command -v redis-server >/dev/null || need+=(redis-server)
command -v dockerd >/dev/null || need+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v rg >/dev/null || need+=(ripgrep)
if [ "${HANDOFF_BOOTSTRAP_POSTGRES:-0}" = 1 ]; then
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
fi
if [ "${HANDOFF_BOOTSTRAP_BROWSER:-0}" = 1 ]; then
  command -v chromium >/dev/null || need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v uv >/dev/null; then
  echo "bootstrap: installing uv"
  python3 -m pip install -q --user uv 2>/dev/null || python3 -m pip install -q uv
fi
UV=$(command -v uv || echo "$HOME/.local/bin/uv")
"$UV" sync -q --frozen
