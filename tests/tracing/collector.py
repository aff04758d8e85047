"""A tiny OTLP/HTTP trace collector on 127.0.0.1, for the tracing tests: it keeps every
span a real process exports (decoded with opentelemetry-proto, the exporter's own)."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Exported:
    """One exported span, with what the tests compare (ids as ints, attributes as values)."""

    service: str
    name: str
    trace_id: int
    span_id: int
    parent_id: int  # 0: a root
    attributes: dict[str, Any]
    links: list[tuple[int, int]]  # (trace id, span id)


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big") if raw else 0


def _exported(service: str, s: Any) -> Exported:
    return Exported(
        service=service,
        name=s.name,
        trace_id=_int(s.trace_id),
        span_id=_int(s.span_id),
        parent_id=_int(s.parent_span_id),
        attributes={a.key: _value(a.value) for a in s.attributes},
        links=[(_int(x.trace_id), _int(x.span_id)) for x in s.links],
    )


class Collector:
    def __init__(self) -> None:
        self.spans: list[Exported] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector._keep(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _keep(self, request: Any) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    found.append(_exported(str(resource.get("service.name")), s))
        with self._lock:
            self.spans.extend(found)

    def named(self, name: str) -> list[Exported]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
