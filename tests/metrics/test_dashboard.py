"""deploy/ agrees with the code: every query of the dashboard names a series the code exports,
every metric the code exports is on the dashboard, and the provisioning files fit together."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from conveyor.metrics.families import ALL
from tests.metrics.samples import Samples

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "conveyor.json"
METRIC_NAME = re.compile(r"\bconveyor_[a-z_]+")
# The sample names prometheus-client writes for a family `name` of each type; checked
# against the library itself below, so an upgrade that changes them fails here.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}


def exported_series() -> dict[str, str]:
    """Every series name the code exports -> the family it belongs to."""
    series: dict[str, str] = {}
    for collector in ALL:
        for family in collector.describe():
            for suffix in SUFFIXES[family.type]:
                series[family.name + suffix] = family.name
    return series


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(node: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def named_metrics() -> set[str]:
    return {name for text in queries(dashboard()) for name in METRIC_NAME.findall(text)}


def test_the_suffix_rules_are_prometheus_clients() -> None:
    registry = CollectorRegistry()
    made = [
        Counter("probe_a_total", "a", ["x"], registry=registry),
        Gauge("probe_b", "b", ["x"], registry=registry),
        Histogram("probe_c", "c", ["x"], registry=registry),
    ]
    for metric in made:
        metric.labels("1")
    written = {name for name, _ in Samples(generate_latest(registry).decode()).values}
    expected = {
        family.name + suffix
        for metric in made
        for family in metric.describe()
        for suffix in SUFFIXES[family.type]
    }
    assert written == expected


def test_every_dashboard_query_names_an_exported_metric() -> None:
    found = named_metrics()
    assert found, "no conveyor_ metric in any query"
    unknown = sorted(found - set(exported_series()))
    assert unknown == [], f"the dashboard queries metrics the code does not export: {unknown}"


def test_every_exported_metric_is_on_the_dashboard() -> None:
    shown = {exported_series()[name] for name in named_metrics()}
    families = {family.name for collector in ALL for family in collector.describe()}
    assert sorted(families - shown) == []


def test_counters_are_queried_by_rate_and_histograms_by_bucket() -> None:
    """A bare counter name or histogram family name is not a series Prometheus has."""
    series = exported_series()
    for text in queries(dashboard()):
        for name in METRIC_NAME.findall(text):
            family = series[name]
            if name.endswith("_total"):
                assert f"rate({name}" in text, text
            elif family != name:  # a histogram's series
                assert name.endswith(("_bucket", "_sum", "_count")), name


def test_panels_query_the_provisioned_data_source() -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    uids = {
        target["datasource"]["uid"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {source["uid"]}
    providers = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "conveyor.yml").read_text()
    )
    assert providers["providers"][0]["type"] == "file"
    titles = [panel["title"] for panel in dashboard()["panels"] if panel["type"] != "row"]
    assert len(titles) == len(set(titles)) >= 10


def test_prometheus_scrapes_the_api_and_the_workers() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["conveyor-api"]
    assert api["metrics_path"] == "/metrics"
    assert api["authorization"]["type"] == "Bearer"  # /metrics is for administrators
    targets = [t for group in api["static_configs"] for t in group["targets"]]
    assert targets and all(t.endswith(":8080") for t in targets)
    assert jobs["conveyor-worker"]["static_configs"][0]["targets"]
