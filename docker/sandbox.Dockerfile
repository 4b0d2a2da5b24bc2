# The agent sandbox image for deployments that can reach a registry.
# Equivalent to the offline `debian` variant of jobs/image.py (debootstrap bookworm minbase
# + the same packages, user and directories); build with:
#   docker build -f docker/sandbox.Dockerfile -t handoff-sandbox:debian docker/
# The container runs read-only with a tmpfs at /tmp (HOME), the repository bind-mounted at
# /workspace and the task spec at /handoff/task.json; see jobs/sandbox.py.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends git python3 ripgrep ca-certificates bash \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 1000 agent \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /bin/bash agent \
    && mkdir -p /workspace /handoff \
    && chown 1000:1000 /workspace \
    && chmod 1777 /tmp

ENV HOME=/tmp
USER 1000:1000
WORKDIR /workspace
