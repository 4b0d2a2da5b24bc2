# The two commands of the README. Both install what is missing first.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
# Trust the system's certificate store (uv bundles its own roots otherwise; a proxy's CA is missing).
export UV_SYSTEM_CERTS := 1

.PHONY: up test lint bench setup

setup:
	@bash scripts/bootstrap.sh

## Run Handoff on http://localhost:8000 with SQLite and a local Redis (started if none answers).
up: setup
	@bash scripts/up.sh

## Install, start throwaway Redis/PostgreSQL/dockerd when none answers, build the sandbox image, run everything.
test:
	@bash scripts/test.sh $(PYTEST_ARGS)

lint:
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy .

bench:
	@bash -c 'source scripts/services.sh && trap stop_services EXIT && uv run python bench/dispatch.py && uv run python bench/ingest.py && uv run python bench/slack_ack.py && uv run python bench/tool_exec.py && uv run python bench/report_economy.py && uv run python bench/gateway.py && uv run python bench/automations.py'
