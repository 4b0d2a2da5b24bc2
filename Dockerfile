# The Handoff application image (API and worker). The agent sandbox image is separate:
# docker/sandbox.Dockerfile.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir uv==0.13.8

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY core core
COPY jobs jobs
COPY github_app github_app
COPY bot bot
COPY web web
COPY migrations migrations
RUN uv sync --frozen --no-dev

ENV PATH="/app/.venv/bin:$PATH" \
    HANDOFF_WORKSPACE_DIR=/var/lib/handoff/workspaces
EXPOSE 8000
CMD ["handoff", "serve", "--host", "0.0.0.0", "--port", "8000"]
