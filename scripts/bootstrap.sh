#!/usr/bin/env bash
# Install what is missing on a fresh Debian machine: system packages, uv, and the Python deps.
# Safe to run again: it only installs what is not there. Works from nothing but python3 and bash
# (no `make` yet: `bash scripts/bootstrap.sh` installs it), with a PEP 668 system Python.
#
# Extras, for `make test`: HANDOFF_BOOTSTRAP_TEST=1 adds PostgreSQL, Chromium and docker-compose.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
# Trust the system's certificate store (uv bundles its own roots otherwise; a proxy's CA is missing).
export UV_SYSTEM_CERTS=1

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null; then
  SUDO=(sudo)
else
  echo "bootstrap: not root and no sudo: install the packages below as root, or run this as root" >&2
  SUDO=(false)
fi

apt_install() {  # apt_install <package>...
  echo "bootstrap: installing $*"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
command -v git >/dev/null || need+=(git)
command -v make >/dev/null || need+=(make)
command -v redis-server >/dev/null || need+=(redis-server)
command -v dockerd >/dev/null || need+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)  # the minimal sandbox image
command -v rg >/dev/null || need+=(ripgrep)
command -v debootstrap >/dev/null || need+=(debootstrap)          # the Debian sandbox image
# The sandbox's static network relay (jobs/gateway/forward.c) and the agent CLI images.
command -v cc >/dev/null && [ -e "$(cc -print-file-name=libc.a)" ] || need+=(gcc libc6-dev)
command -v npm >/dev/null || need+=(npm)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ "${HANDOFF_BOOTSTRAP_TEST:-0}" = 1 ]; then
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
  command -v chromium >/dev/null || need+=(chromium)              # the dashboard's browser tests
  command -v docker-compose >/dev/null || need+=(docker-compose)  # tests/test_compose.py
fi
# uv comes from PyPI through a private virtual environment, which needs the venv module (Debian
# splits it into python3-venv) unless a uv is already there.
uv_bin() { command -v uv || { [ -x "$HOME/.local/bin/uv" ] && echo "$HOME/.local/bin/uv"; }; }
if ! uv_bin >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi

if ! UV=$(uv_bin); then
  # Not `pip install --user`: a system Python that is "externally managed" (PEP 668) refuses it.
  tools=${HANDOFF_TOOLS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/handoff/tools}
  echo "bootstrap: installing uv $UV_VERSION into $tools/uv (a private virtual environment)"
  python3 -m venv "$tools/uv"
  cert=()
  [ -s /etc/ssl/certs/ca-certificates.crt ] && cert=(--cert /etc/ssl/certs/ca-certificates.crt)
  "$tools/uv/bin/python" -m pip install -q --disable-pip-version-check "${cert[@]}" "uv==$UV_VERSION"
  mkdir -p "$HOME/.local/bin"
  ln -sf "$tools/uv/bin/uv" "$HOME/.local/bin/uv"
  UV=$HOME/.local/bin/uv
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: python3 is older than 3.11; uv needs a Python >= 3.11 on PATH" >&2
fi
# Never let uv fetch a Python build from the internet: use the machine's own.
UV_PYTHON_DOWNLOADS=never "$UV" sync -q --frozen
