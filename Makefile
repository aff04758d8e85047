# The targets developers run are the ones CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two installs into one venv, one recipe: `runtime` (what `make run` needs, `pip install -e .`)
# and `dev` (the test and lint toolchain too, `-e '.[dev]'`). The dev set holds the runtime
# set, so installing it stamps both: `make run` after `make test` installs nothing, and
# `make test` after `make run` adds the dev extra. Editing pyproject.toml redoes either.
RUNTIME := $(VENV)/.installed-runtime
DEV     := $(VENV)/.installed-dev
EXTRAS_runtime :=
EXTRAS_dev     := [dev]

.PHONY: install run test lint fmt bench chaos soak load screenshots compose-check clean

$(RUNTIME) $(DEV): $(VENV)/.installed-%: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		(echo "Conveyor needs Python 3.11 or newer" >&2; exit 1)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.$(EXTRAS_$*)'
	@touch $@ $(if $(filter dev,$*),$(RUNTIME))

install: $(DEV)

run: $(RUNTIME)
	$(BIN)/conveyor run

test: $(DEV)
	$(BIN)/pytest -n auto

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(DEV)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(DEV)
	$(BIN)/python -m bench.run

# Every fault of issue #13 against real processes on both databases (docs/operations.md);
# a private PostgreSQL cluster of its own, 7-8 minutes on 2 busy cores, non-zero on any failure.
chaos: $(DEV)
	$(BIN)/python -m chaos.run

# 30 minutes of mixed load (submits, batches, retries, cron, SSE, webhooks) on a private
# PostgreSQL cluster; every process's RSS, p99 latency and queue depth sampled; non-zero
# unless RSS stays flat and nothing is lost (docs/operations.md, "Soak"). SOAK_ARGS: options.
soak: $(DEV)
	$(BIN)/python -m chaos.soak $(SOAK_ARGS)

# The HTTP API under Locust (load/, docs/deploy.md "Load"): drives a running Conveyor (LOAD_URL,
# default `make run`'s address) for LOAD_DURATION s (60) with LOAD_USERS users (10); needs the
# server's admin password (LOAD_ADMIN_PASSWORD) to create its accounts. A table at the end and
# an HTML report in load/results/.
load: $(RUNTIME)
	@$(BIN)/pip show --quiet locust >/dev/null 2>&1 || \
		$(BIN)/pip install --quiet --disable-pip-version-check -e '.[load]'
	$(BIN)/python -m load.run

# The Dockerfile, deploy/compose.yaml and deploy/k8s checked without a container engine or a
# cluster: hadolint, `docker-compose config` (Debian's docker-compose), `kubectl kustomize`
# with the Kubernetes and KEDA schemas, and their agreement with the settings.
compose-check: $(DEV)
	$(BIN)/pytest -p no:xdist -q tests/deploy

# The dashboard's screenshots in docs/screenshots/ (README), taken by its browser tests.
screenshots: $(DEV)
	CONVEYOR_SCREENSHOTS=1 $(BIN)/pytest -p no:xdist -q tests/dashboard/test_screenshots.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
