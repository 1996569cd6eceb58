"""A local OTLP/HTTP receiver: what an OpenTelemetry Collector is to the service, for tests and
the benchmark. It answers every export with success, and keeps the spans and metrics it was sent,
decoded with the ``opentelemetry-proto`` package.

``python -m harness.otlp PORT`` serves on ``PORT`` until killed, keeping nothing (the
benchmark's receiver, in a process of its own).
"""

from __future__ import annotations

import gzip
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value(any_value: AnyValue) -> Any:
    """An attribute's value as Python's."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@dataclass(frozen=True)
class Span:
    name: str
    kind: int  # 2: server, 3: client
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)
    status: int  # 0: unset, 2: error
    resource: dict[str, Any]


class Receiver:
    """Serves on a free loopback port in a thread of this process."""

    def __init__(self, port: int = 0, *, keep: bool = True) -> None:
        self.spans: list[Span] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.exports = 0
        receiver, lock = self, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                with lock:
                    receiver.exports += 1
                    answer = receiver._take(self.path, body) if keep else b""
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, path: str, body: bytes) -> bytes:
        if path == "/v1/metrics":
            metrics = ExportMetricsServiceRequest()
            metrics.ParseFromString(body)
            self.metrics.append(metrics)
            answer: bytes = ExportMetricsServiceResponse().SerializeToString()
            return answer
        traces = ExportTraceServiceRequest()
        traces.ParseFromString(body)
        for resource_spans in traces.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(
                    Span(
                        s.name,
                        s.kind,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        {a.key: value(a.value) for a in s.attributes},
                        [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        s.status.code,
                        resource,
                    )
                    for s in scope_spans.spans
                )
        answer = ExportTraceServiceResponse().SerializeToString()
        return answer

    def wait_for(self, found: Callable[[Receiver], bool], timeout_seconds: float = 10.0) -> None:
        """Waits until ``found`` says what was received is enough."""
        deadline = time.monotonic() + timeout_seconds
        while not found(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"not received in {timeout_seconds} s: {self.spans}")
            time.sleep(0.05)

    def metric_names(self) -> set[str]:
        return {metric.name for export in self.metrics for rm in export.resource_metrics
                for sm in rm.scope_metrics for metric in sm.metrics}  # fmt: skip

    def histogram(self, name: str) -> list[tuple[dict[str, Any], int, float]]:
        """The points of histogram ``name`` in the last export that had it: attributes, count,
        sum (cumulative)."""
        found = [
            [({a.key: value(a.value) for a in p.attributes}, p.count, p.sum)
             for p in metric.histogram.data_points]
            for export in self.metrics for rm in export.resource_metrics
            for sm in rm.scope_metrics for metric in sm.metrics if metric.name == name
        ]  # fmt: skip
        return found[-1] if found else []


if __name__ == "__main__":
    with Receiver(int(sys.argv[1]), keep=False):
        threading.Event().wait()
