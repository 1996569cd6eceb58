"""The spans' protobuf written by hand is the SDK encoder's, as ``opentelemetry-proto`` reads
both."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from app.ops.otlp import Endpoint, SpanEncoder, SpanExporter


def spans() -> tuple[ReadableSpan, ...]:
    kept = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bib", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("byte_in_bottle", "1.0")
    state = TraceState([("vendor", "x")])
    caller = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=state)  # fmt: skip
    server = tracer.start_span("POST /v1/chat/completions", set_span_in_context(
        NonRecordingSpan(caller)), SpanKind.SERVER, {"http.request.method": "POST"})  # fmt: skip
    client = tracer.start_span("chat llama3.2", set_span_in_context(server), SpanKind.CLIENT,
                               links=[])  # fmt: skip
    client.set_attributes({
        "gen_ai.request.temperature": 0.5, "gen_ai.request.max_tokens": 50,
        "gen_ai.request.stream": True, "gen_ai.response.finish_reasons": ["stop"],
        "negative": -7, "é": "ünïcode", "empty": "", "big": 2**62,
    })  # fmt: skip
    client.add_event("retry", {"host": "http://h1"})
    client.set_status(Status(StatusCode.ERROR, "upstream failed"))
    client.end()
    server.add_link(caller, {"bib.link": "produced_by"})
    server.set_status(Status(StatusCode.OK))
    server.end()
    lone = tracer.start_span("GET /v1/health")
    lone.end()
    return kept.get_finished_spans()


def test_the_same_request_as_the_sdks_encoder_makes() -> None:
    batch = spans()
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().encode(batch))
    assert ours == encode_spans(batch)
    assert len(ours.resource_spans[0].scope_spans[0].spans) == 3


def test_the_standard_variables_place_and_sign_the_export() -> None:
    exporter = SpanExporter({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret, x-team=gpu",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
    })  # fmt: skip
    endpoint = exporter.endpoint
    assert endpoint.url == "http://collector:4318/v1/traces"
    assert endpoint._session.headers["api-key"] == "s=cret"
    assert endpoint._session.headers["x-team"] == "gpu"
    assert endpoint._session.headers["content-encoding"] == "gzip"
    assert endpoint.timeout_seconds == 10
    own = Endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://b:4318/metrics",
                    "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}, "METRICS")  # fmt: skip
    assert own.url == "http://b:4318/metrics"
    assert own.timeout_seconds == 2.5
