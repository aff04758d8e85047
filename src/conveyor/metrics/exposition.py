"""What a scrape shows: this process's metrics, or every process's in multiprocess mode.

Multiprocess mode is prometheus-client's: set PROMETHEUS_MULTIPROC_DIR to an empty
directory before the processes start (prometheus-client reads it when it is imported, which
is why it is not a CONVEYOR_ setting). Each process then writes its metrics to its own files
there, and any process's /metrics shows the sum over all of them, so scrape one endpoint
per directory. Without it, each process shows its own metrics and each is scraped.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from conveyor.metrics.families import WORKERS_ALIVE

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Set only by the API's refresh. An unlabelled gauge shows 0 until set, which a worker's
# endpoint would offer as "no workers alive"; the endpoints of processes without an API
# leave it out (in multiprocess mode too: scrape the API's endpoint when it shares the dir).
_API_ONLY = frozenset(family.name for family in WORKERS_ALIVE.describe())
AsgiApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


@functools.cache
def registry() -> CollectorRegistry:
    """The default registry, or one that collects every process's files."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    collected = CollectorRegistry()
    MultiProcessCollector(collected, path=directory)  # type: ignore[no-untyped-call]
    return collected


def render(accept: str | None) -> tuple[bytes, str]:
    """The exposition in the format the scraper asked for, and its content type."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry()), content_type


def asgi_app() -> AsgiApp:
    """A bare ASGI app serving the metrics, for processes that have no API of their own."""
    source = CollectorRegistry(auto_describe=False)
    source.register(_Without(registry(), _API_ONLY))
    app: AsgiApp = make_asgi_app(source)
    return app


class _Without(Collector):
    """Another collector's families except the named ones."""

    def __init__(self, inner: Collector, names: frozenset[str]) -> None:
        self._inner = inner
        self._names = names

    def collect(self) -> Iterable[Metric]:
        return (family for family in self._inner.collect() if family.name not in self._names)
