#!/usr/bin/env bash
# `make test`: install what is missing, start the services that do not answer, build the offline
# sandbox image, run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
HANDOFF_BOOTSTRAP_POSTGRES=1 HANDOFF_BOOTSTRAP_BROWSER=1 bash scripts/bootstrap.sh
export PATH="$HOME/.local/bin:$PATH"
source scripts/services.sh
trap stop_services EXIT
uv run --frozen handoff sandbox build --offline --variant minimal >/dev/null
status=0
uv run --frozen pytest "$@" || status=$?
exit $status
