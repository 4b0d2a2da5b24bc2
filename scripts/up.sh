#!/usr/bin/env bash
# `make up`: a Docker engine (started here if none answers), the offline sandbox image, then
# `handoff up` (API + worker, SQLite, and a local redis-server started as a child if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (no bridge, no iptables: agent containers have no network)"
  mkdir -p .handoff
  nohup dockerd --bridge=none --iptables=false --ip6tables=false >.handoff/dockerd.log 2>&1 &
  for _ in $(seq 600); do docker info >/dev/null 2>&1 && break; sleep 0.1; done
  if ! docker info >/dev/null 2>&1; then
    echo "dockerd did not start within 60 s; the end of .handoff/dockerd.log:" >&2
    tail -n 15 .handoff/dockerd.log >&2
    exit 1
  fi
fi
docker image inspect handoff-sandbox:minimal >/dev/null 2>&1 || uv run --frozen handoff sandbox build --offline --variant minimal
# The environment's own entry point, not `uv run`: Ctrl-C reaches handoff, which stops cleanly and
# exits 0, so make prints nothing (uv would exit 130 for having seen the SIGINT itself).
exec .venv/bin/handoff up --host "${HANDOFF_HOST:-127.0.0.1}" --port "${HANDOFF_PORT:-8000}"
