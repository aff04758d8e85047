"""OpenTelemetry tracing, or nothing: every call is a no-op until a process turns it on.

Conveyor's spans (API requests, claims, runs) must cost nothing to those who do not trace:
the opentelemetry packages are an optional extra (`conveyor[otel]`), imported only by
`configure` (a process's start, from the standard OTEL_* variables) or `enable` (a test, or
an application with an SDK of its own). Until one of them succeeds, `span()` hands back one
shared do-nothing span and `current_context()` returns None, without importing anything.

A job carries its submitter's context through the database as text (`jobs.trace_context`):
the W3C `traceparent` (and `tracestate`) as JSON, what `current_context()` returns; the
worker's run span continues it (`continued`), so one trace goes from the request to the run.

Run spans are given ids derived from (job id, attempt), and a job submitted without a trace
gets a trace id derived from its id, when the SDK is ours (`configure`, or a provider built
with `id_generator()`): a retry then links to its first attempt's span, and a workflow step
to its dependencies' runs, with nothing more stored than the submitter's context.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

log = logging.getLogger("conveyor.tracing")

Attribute = str | bool | int | float | Sequence[str]
Kind = Literal["internal", "server", "client", "producer", "consumer"]
# The ids the next span started in this context is to have (trace id only used for a root;
# span id 0: a random one).
_DERIVED: ContextVar[tuple[int, int] | None] = ContextVar("conveyor_span_ids", default=None)


class Span(Protocol):
    """What Conveyor does with a span: add attributes, rename it, mark it failed."""

    def set(self, key: str, value: Attribute) -> None: ...

    def rename(self, name: str) -> None: ...

    def fail(self, message: str) -> None: ...


class _NoSpan:
    """The span of a process that does not trace: one instance, reused, does nothing."""

    def set(self, key: str, value: Attribute) -> None:
        pass

    def rename(self, name: str) -> None:
        pass

    def fail(self, message: str) -> None:
        pass

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


NO_SPAN = _NoSpan()


class _LiveSpan:
    """An SDK span behind the `Span` protocol (its Status type imported once, at `enable`)."""

    __slots__ = ("_span", "_status")

    def __init__(self, span: Any, status: Any) -> None:
        self._span, self._status = span, status

    def set(self, key: str, value: Attribute) -> None:
        self._span.set_attribute(key, value)

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    def fail(self, message: str) -> None:
        self._span.set_status(self._status(_error_code(), message))


@dataclass(frozen=True, slots=True)
class RunRef:
    """One run of a job, as a link target: its span ids are derived, never stored."""

    job_id: str
    attempt: int
    trace_context: str | None  # the job's stored context (None: its own derived trace)


@dataclass(frozen=True, slots=True)
class _Tracing:
    tracer: Any
    provider: Any
    owned: bool  # made by `configure`: ours to flush and shut down
    derived_ids: bool  # run spans' ids are derived (links to earlier runs can be made)


_state: _Tracing | None = None


def enabled() -> bool:
    """True once `configure` or `enable` turned tracing on in this process."""
    return _state is not None


def wanted(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the OTEL_* variables ask for ([] : tracing off). Off unless an
    exporter is named (OTEL_TRACES_EXPORTER, not `none`) or an OTLP endpoint is set; the
    SDK's own default (otlp to localhost) would cost every process spans nobody reads."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        return [e.strip() for e in named.split(",") if e.strip() and e.strip() != "none"]
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return ["otlp"] if any(environ.get(name) for name in endpoints) else []


def configure(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Set up the SDK once per process from the OTEL_* variables (exporters, endpoint,
    sampler, batch sizes, resource); True when tracing is on. OTEL_SERVICE_NAME wins over
    `service_name` (the process's role, e.g. `conveyor-worker`)."""
    environ = os.environ if environ is None else environ
    if _state is not None:
        return True
    names = wanted(environ)
    if not names:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* asks for traces, but opentelemetry is not installed: no spans "
                    "(pip install 'conveyor[otel]')")  # fmt: skip
        return False
    named = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(named), id_generator=id_generator())
    exporters = [e for e in (_exporter(name, environ) for name in names) if e is not None]
    if not exporters:
        return False
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _install(provider, owned=True)
    log.info("tracing on: spans exported to %s", ", ".join(names))
    return True


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    """The exporter OTEL_TRACES_EXPORTER names; otlp speaks http/protobuf unless the
    protocol says grpc (whose exporter is not in the extra: install it to use it)."""
    try:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        if name == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol.strip() == "grpc":
                grpc = importlib.import_module(
                    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
                )  # not in the extra (grpcio is heavy): there if the user installed it
                return grpc.OTLPSpanExporter()
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
    except ImportError as exc:
        log.warning("span exporter %r is not installed (%s): not exported", name, exc)
        return None
    log.warning("unknown span exporter %r in OTEL_TRACES_EXPORTER: ignored", name)
    return None


def enable(provider: Any = None) -> None:
    """Trace to `provider` (an SDK TracerProvider; default: the global one): for tests and
    for applications that set up OpenTelemetry themselves."""
    if provider is None:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
    _install(provider, owned=False)


def disable() -> None:
    """Back to no tracing (tests); a provider `configure` made is shut down first."""
    shutdown()
    global _state
    _state = None


def shutdown() -> None:
    """Export what is buffered (a process about to leave): only a provider of our own."""
    if _state is not None and _state.owned:
        try:
            _state.provider.shutdown()
        except Exception as exc:  # an exporter's trouble never stops a process from ending
            log.warning("tracing: the last spans were not exported: %s", exc)


def _install(provider: Any, owned: bool) -> None:
    global _state
    derived = isinstance(getattr(provider, "id_generator", None), _id_generator_class())
    tracer = provider.get_tracer("conveyor")
    _state = _Tracing(tracer, provider, owned, derived)


def current_context() -> str | None:
    """The current span's W3C context as stored with a job (JSON of `traceparent` and,
    if any, `tracestate`); None when not tracing or no span is current."""
    if _state is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    global _last
    last = _last  # one read: another thread may replace it
    if last[0] is context:  # a batch's jobs share their request's span: written once
        return last[1]
    carrier = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-"
                              f"{context.trace_flags:02x}"}  # fmt: skip
    if context.trace_state:
        carrier["tracestate"] = context.trace_state.to_header()
    text = json.dumps(carrier, separators=(",", ":"))
    _last = (context, text)
    return text


_last: tuple[object, str] = (None, "")  # the last span context current_context() wrote, as text


def _parent(carrier: Mapping[str, str] | None) -> Any:
    """A context whose span is the one `carrier` names; an empty one (a root) if none."""
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not carrier:
        return Context()
    return TraceContextTextMapPropagator().extract(dict(carrier), context=Context())


def _stored(trace_context: str | None) -> dict[str, str] | None:
    """A stored context back as a carrier; None when absent or unreadable (never fatal)."""
    if not trace_context:
        return None
    try:
        carrier = json.loads(trace_context)
    except ValueError:
        return None
    return carrier if isinstance(carrier, dict) else None


def span(
    name: str,
    *,
    kind: Kind = "internal",
    attributes: Mapping[str, Attribute] | None = None,
    headers: Mapping[str, str] | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """A span around the block, child of the current one, or of the W3C `headers`
    (traceparent, tracestate) of a request when they are given."""
    if _state is None:
        return NO_SPAN
    parent = _parent(headers) if headers else None
    return _current(_start(_state, name, parent, kind, attributes, (), None, None))


def continued(
    name: str,
    trace_context: str | None,
    *,
    kind: Kind = "internal",
    attributes: Mapping[str, Attribute] | None = None,
    links: Sequence[RunRef] = (),
    run: RunRef | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """A span around the block whose parent is a stored context (a root when None, never
    the current span); `run`: it is that run's span (its ids derived); `links`: to earlier
    runs (made only when ids are derived: otherwise they would point at nothing)."""
    if _state is None:
        return NO_SPAN
    ids = _run_ids(run) if run is not None and _state.derived_ids else None
    made = [_run_link(ref) for ref in links] if _state.derived_ids else []
    parent = _parent(_stored(trace_context))
    return _current(_start(_state, name, parent, kind, attributes, made, ids, None))


def interval(
    name: str,
    trace_context: str | None,
    start: datetime,
    end: datetime,
    attributes: Mapping[str, Attribute] | None = None,
    run: RunRef | None = None,
    kind: Kind = "internal",
) -> None:
    """A finished span from `start` to `end` under a stored context (a job's queue wait; a
    root when None); `run`: with none stored, it goes in that run's derived trace."""
    if _state is None:
        return
    ids = (_run_ids(run)[0], 0) if run is not None and _state.derived_ids else None
    parent = _parent(_stored(trace_context))
    made = _start(_state, name, parent, kind, attributes, (), ids, start)
    made.end(end_time=_nanos(end))


@contextlib.contextmanager
def _current(made: Any) -> Iterator[Span]:
    """`made` current for the block, ended after it (an exception recorded on it)."""
    from opentelemetry import trace

    with trace.use_span(made, end_on_exit=True, record_exception=True):
        yield _LiveSpan(made, trace.Status)


def _start(
    state: _Tracing,
    name: str,
    parent: Any,
    kind: Kind,
    attributes: Mapping[str, Attribute] | None,
    links: Sequence[Any],
    ids: tuple[int, int] | None,
    start: datetime | None,
) -> Any:
    """An SDK span, started (`ids`: the derived ids it takes, see `_id_generator_class`)."""
    from opentelemetry import trace

    token = _DERIVED.set(ids) if ids is not None else None
    try:
        return state.tracer.start_span(
            name,
            context=parent,
            kind=getattr(trace.SpanKind, kind.upper()),
            attributes=dict(attributes) if attributes else None,
            links=links or None,
            start_time=_nanos(start) if start is not None else None,
        )
    finally:
        if token is not None:
            _DERIVED.reset(token)


def _nanos(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


def _derive(text: str, bits: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "big")
    return value or 1  # zero is the invalid id


def _run_ids(run: RunRef) -> tuple[int, int]:
    """(the trace id of a root run, its span id): the job's own trace when none was stored."""
    return _derive(run.job_id, 128), _derive(f"{run.job_id}/{run.attempt}", 64)


def _run_link(ref: RunRef) -> Any:
    from opentelemetry import trace

    carrier = _stored(ref.trace_context)
    trace_id, span_id = _run_ids(ref)
    if carrier:
        stored = trace.get_current_span(_parent(carrier)).get_span_context()
        if stored.is_valid:
            trace_id = stored.trace_id
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
    target = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    return trace.Link(target, {"conveyor.job.id": ref.job_id, "conveyor.job.attempt": ref.attempt})


def _error_code() -> Any:
    from opentelemetry.trace import StatusCode

    return StatusCode.ERROR


def id_generator() -> Any:
    """An SDK id generator that gives run spans their derived ids (random otherwise): pass
    it to your TracerProvider to have retries and workflow joins linked."""
    return _id_generator_class()()


_GENERATOR: list[type] = []


def _id_generator_class() -> type:
    """Made on first use (it subclasses the SDK's): importing this module imports no SDK."""
    if _GENERATOR:
        return _GENERATOR[0]
    try:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    except ImportError:

        class _Absent:
            pass

        _GENERATOR.append(_Absent)
        return _Absent

    class DerivedRunIds(RandomIdGenerator):
        def generate_span_id(self) -> int:
            ids = _DERIVED.get()
            return ids[1] if ids is not None and ids[1] else int(super().generate_span_id())

        def generate_trace_id(self) -> int:
            ids = _DERIVED.get()
            return ids[0] if ids is not None else int(super().generate_trace_id())

    _GENERATOR.append(DerivedRunIds)
    return DerivedRunIds
