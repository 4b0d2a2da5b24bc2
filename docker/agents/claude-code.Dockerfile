# Claude Code (https://www.npmjs.com/package/@anthropic-ai/claude-code) as a Handoff command profile.
# The same image as `python -m jobs.agent_image claude-code` builds offline (no registry needed).
#
#   docker build -f docker/agents/claude-code.Dockerfile -t handoff-agent:claude-code .
#
# At run time the container is Handoff's sandbox: network "none", read-only root, tmpfs /tmp as
# HOME, uid 1000, no capabilities. It holds no key: ANTHROPIC_API_KEY is a per-run token for the
# run's model gateway on the host, and ANTHROPIC_BASE_URL points at it through the forwarder
# Handoff mounts at /handoff/bin/handoff-forward (see SECURITY.md).
ARG BASE=node:22-bookworm-slim
FROM ${BASE}
ARG CLAUDE_CODE_VERSION=2.1.332
USER root
RUN set -eux; \
    missing=""; \
    command -v node >/dev/null || missing="$missing nodejs npm"; \
    for p in git ripgrep python3 bash ca-certificates; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done; \
    if [ -n "$missing" ]; then \
      mkdir -p /var/lib/apt/lists/partial /var/cache/apt/archives/partial; \
      apt-get update; apt-get install -y --no-install-recommends $missing; rm -rf /var/lib/apt/lists/*; \
    fi; \
    npm install -g --omit=dev "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"; \
    npm cache clean --force; \
    mkdir -p /workspace /handoff; chown 1000:1000 /workspace; chmod 1777 /tmp; \
    claude --version
# Documented switches for telemetry, error reporting, update checks and other non-essential traffic.
ENV HOME=/tmp \
    DISABLE_AUTOUPDATER=1 \
    DISABLE_TELEMETRY=1 \
    DISABLE_ERROR_REPORTING=1 \
    DISABLE_BUG_COMMAND=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /workspace
