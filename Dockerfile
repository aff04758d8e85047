# syntax=docker/dockerfile:1
# Conveyor's image: one image for every process (api, worker, scheduler, results, migrate,
# run); the command picks the process. Configuration comes only from CONVEYOR_* environment
# variables (docs/deploy.md). Build from the repository root:
#   docker build -t conveyor:latest .
# Your own job types: build FROM this image, pip install your package, and set
# CONVEYOR_HANDLER_MODULES (or declare a `conveyor.handlers` entry point).

ARG PYTHON_VERSION=3.11

# ---- build: the Conveyor wheel and wheels of all its dependencies ----------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Every dependency ships manylinux wheels; `pip wheel` only collects them (no compiler needed).
RUN python -m pip wheel --wheel-dir /wheels '.[otel]'

# ---- runtime: the wheels installed into a slim Python, run as an unprivileged user ----------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONVEYOR_HOST=0.0.0.0 \
    CONVEYOR_PORT=8080 \
    CONVEYOR_DATA_DIR=/var/lib/conveyor \
    CONVEYOR_LOG_FILE=
RUN groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid conveyor --home-dir /var/lib/conveyor \
       --no-create-home --shell /usr/sbin/nologin conveyor \
    && install -d -o conveyor -g conveyor -m 0750 /var/lib/conveyor
# Installed from the build stage's wheels only (no index): what was built is what runs, the
# `otel` extra's too: tracing stays off until OTEL_* variables ask for it (docs/tracing.md).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index /wheels/*.whl
COPY deploy/healthcheck.py /usr/local/lib/conveyor-healthcheck.py

USER 10001:10001
WORKDIR /var/lib/conveyor
EXPOSE 8080
# The API answers /health; a worker, scheduler or relay answers /metrics on its
# CONVEYOR_METRICS_PORT (set one for each of them): deploy/healthcheck.py.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/conveyor-healthcheck.py"]
# SIGTERM (Docker's default stop signal) stops a worker gracefully: it finishes running jobs
# within CONVEYOR_SHUTDOWN_GRACE (30 s) and gives the rest back; allow that in `stop`.
STOPSIGNAL SIGTERM
CMD ["conveyor", "api"]
