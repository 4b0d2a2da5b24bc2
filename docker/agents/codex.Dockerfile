# Codex CLI (https://www.npmjs.com/package/@openai/codex) as a Handoff command profile.
#
# With a registry:
#   docker build -f docker/agents/codex.Dockerfile -t handoff-agent:codex docker/agents/
# Without pulling a base image, on top of the offline sandbox image (`handoff sandbox build
# --offline --variant debian`); apt and npm still need network at build time:
#   docker build --build-arg BASE=handoff-sandbox:debian \
#     -f docker/agents/codex.Dockerfile -t handoff-agent:codex docker/agents/
#
# Codex's own sandbox (Landlock/seccomp) is switched off in the profile's command
# (--dangerously-bypass-approvals-and-sandbox): Handoff's container is the sandbox, and Codex's
# nested one cannot start with all capabilities dropped. The profile passes OPENAI_API_KEY only.
ARG BASE=node:22-bookworm-slim
FROM ${BASE}
ARG CODEX_VERSION=latest
USER root
RUN set -eux; \
    missing=""; \
    command -v node >/dev/null || missing="$missing nodejs npm"; \
    for p in git ripgrep python3 bash ca-certificates; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done; \
    if [ -n "$missing" ]; then \
      mkdir -p /var/lib/apt/lists/partial /var/cache/apt/archives/partial; \
      apt-get update; apt-get install -y --no-install-recommends $missing; rm -rf /var/lib/apt/lists/*; \
    fi; \
    npm install -g --omit=dev "@openai/codex@${CODEX_VERSION}"; \
    npm cache clean --force; \
    mkdir -p /workspace /handoff; chown 1000:1000 /workspace; chmod 1777 /tmp; \
    codex --version
ENV HOME=/tmp \
    CODEX_HOME=/tmp/.codex \
    PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /workspace
