# The Handoff application image: the API, the worker and docker-compose.yml's one-shot jobs.
# The agent sandbox images are separate (docker/sandbox.Dockerfile, or `handoff sandbox build`).
#
# BASE_IMAGE is any Debian-based image with python3 >= 3.11. The default comes from Docker Hub;
# with no registry, debootstrap one and `docker import` it (tests/test_compose.py does), then
#   docker build --build-arg BASE_IMAGE=my-debian-python -t handoff .
# Package registries (Debian, PyPI) are still needed while building.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG UV_VERSION=0.13.9
# The system's certificate store is trusted (a TLS-intercepting proxy's CA lives there, not in
# pip's or uv's own bundles); uv never downloads a Python build, it uses the base image's.
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_SYSTEM_CERTS=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    PYTHONUNBUFFERED=1

# git: clones and pushes happen here, never in a sandbox. busybox-static and debootstrap:
# `handoff sandbox build --offline` (the sandbox-build service). gcc and libc6-dev: the worker
# compiles the sandbox's static network forwarder once (jobs/gateway/forwarder.py) for runs that
# use the model gateway or the egress proxy. uv: in a venv of its own, since a Debian system Python
# refuses `pip install` (PEP 668).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates busybox-static debootstrap \
      gcc libc6-dev \
      $(python3 -c 'import ensurepip' 2>/dev/null || echo python3-venv) \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv

WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY core core
COPY jobs jobs
COPY github_app github_app
COPY bot bot
COPY web web
COPY migrations migrations
COPY app-manifest.yml slack-manifest.yml ./
RUN uv sync --frozen --no-dev

ENV PATH="/app/.venv/bin:$PATH"
EXPOSE 8000
CMD ["handoff", "serve", "--host", "0.0.0.0", "--port", "8000"]
