# The targets developers run are the ones CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint fmt bench chaos soak load screenshots compose-check clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		(echo "Conveyor needs Python 3.11 or newer" >&2; exit 1)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/conveyor run

test: $(STAMP)
	$(BIN)/pytest -n auto

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.run

# Every fault of issue #13 against real processes on both databases (docs/operations.md);
# a private PostgreSQL cluster of its own, 7-8 minutes on 2 busy cores, non-zero on any failure.
chaos: $(STAMP)
	$(BIN)/python -m chaos.run

# 30 minutes of mixed load (submits, batches, retries, cron, SSE, webhooks) on a private
# PostgreSQL cluster; every process's RSS, p99 latency and queue depth sampled; non-zero
# unless RSS stays flat and nothing is lost (docs/operations.md, "Soak"). SOAK_ARGS: options.
soak: $(STAMP)
	$(BIN)/python -m chaos.soak $(SOAK_ARGS)

# The HTTP API under Locust (load/, docs/deploy.md "Load"): drives a running Conveyor (LOAD_URL,
# default `make run`'s address) for LOAD_DURATION s (60) with LOAD_USERS users (10); needs the
# server's admin password (LOAD_ADMIN_PASSWORD) to create its accounts. A table at the end and
# an HTML report in load/results/.
load: $(STAMP)
	@$(BIN)/pip show --quiet locust >/dev/null 2>&1 || \
		$(BIN)/pip install --quiet --disable-pip-version-check -e '.[load]'
	$(BIN)/python -m load.run

# The Dockerfile, deploy/compose.yaml and deploy/k8s checked without a container engine or a
# cluster: hadolint, `docker-compose config` (Debian's docker-compose), `kubectl kustomize`
# with the Kubernetes and KEDA schemas, and their agreement with the settings.
compose-check: $(STAMP)
	$(BIN)/pytest -p no:xdist -q tests/deploy

# The dashboard's screenshots in docs/screenshots/ (README), taken by its browser tests.
screenshots: $(STAMP)
	CONVEYOR_SCREENSHOTS=1 $(BIN)/pytest -p no:xdist -q tests/dashboard/test_screenshots.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
