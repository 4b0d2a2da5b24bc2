# Claude Code (https://www.npmjs.com/package/@anthropic-ai/claude-code) as a Handoff command profile.
#
# With a registry:
#   docker build -f docker/agents/claude-code.Dockerfile -t handoff-agent:claude-code docker/agents/
# Without pulling a base image, on top of the offline sandbox image (`handoff sandbox build
# --offline --variant debian`); apt and npm still need network at build time:
#   docker build --build-arg BASE=handoff-sandbox:debian \
#     -f docker/agents/claude-code.Dockerfile -t handoff-agent:claude-code docker/agents/
#
# At run time the container is Handoff's hardened sandbox (read-only root, tmpfs /tmp as HOME,
# uid 1000, no capabilities); the profile turns the network on and passes in ANTHROPIC_API_KEY
# only (see examples/handoff.yml, profile `claude-code`).
ARG BASE=node:22-bookworm-slim
FROM ${BASE}
ARG CLAUDE_CODE_VERSION=latest
USER root
# Debian's nodejs (18 on bookworm) is enough for Claude Code; the node image already has 22.
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
ENV HOME=/tmp \
    DISABLE_AUTOUPDATER=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /workspace
