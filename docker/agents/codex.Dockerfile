# Codex CLI (https://www.npmjs.com/package/@openai/codex) as a Handoff command profile.
# The same image as `python -m jobs.agent_image codex` builds offline (no registry needed).
#
#   docker build -f docker/agents/codex.Dockerfile -t handoff-agent:codex .
#
# `handoff-codex` writes Codex's config.toml so that its model provider is the run's model gateway
# (OPENAI_BASE_URL, with the per-run gateway token in OPENAI_API_KEY: the container never holds a
# key), then runs `codex exec`. Codex's own sandbox (Landlock/seccomp) is switched off in the
# profile's command (--dangerously-bypass-approvals-and-sandbox): Handoff's container is the
# sandbox, and a nested one cannot start with all capabilities dropped.
ARG BASE=node:22-bookworm-slim
FROM ${BASE}
ARG CODEX_VERSION=0.171.0
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
COPY --chmod=755 jobs/gateway/handoff-codex /usr/local/bin/handoff-codex
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /workspace
