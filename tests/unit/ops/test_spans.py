"""The service's own spans: sampled as the environment says, under their parents, batched, and
read by both OTLP encoders alike."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from app.ops.otlp import SpanEncoder
from app.ops.spans import Span, Tracer

SAMPLED_CALLER = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331,
                             is_remote=True, trace_flags=TraceFlags(1))  # fmt: skip


def traced(environ: dict[str, str] | None = None) -> tuple[Tracer, list[Span]]:
    exported: list[Span] = []

    def export(batch: Sequence[Span]) -> None:
        exported.extend(batch)

    return Tracer("byte_in_bottle", export, {"OTEL_BSP_SCHEDULE_DELAY": "10", **(environ or {})}
                  ), exported  # fmt: skip


def test_a_request_and_its_generation_as_the_sdks_encoder_reads_them() -> None:
    tracer, exported = traced()
    caller = set_span_in_context(NonRecordingSpan(SAMPLED_CALLER))
    request = tracer.start_span("POST", caller, SpanKind.SERVER, {"http.request.method": "POST"})
    generation = tracer.start_span("chat m", set_span_in_context(request), SpanKind.CLIENT)
    generation.add_event("retry", {"host": "http://h1"})
    generation.set_status(Status(StatusCode.ERROR, "upstream failed"))
    generation.end()
    request.update_name("POST /v1/chat/completions")
    request.set_attributes({"http.response.status_code": 502, "bib.tokens": 3})
    request.add_link(SAMPLED_CALLER, {"bib.link": "produced_by"})
    request.end()
    request.end()  # once only
    tracer.batch.close(1)
    assert [s.name for s in exported] == ["chat m", "POST /v1/chat/completions"]
    client, server = exported
    assert server.parent == SAMPLED_CALLER
    assert client.parent == server.context
    assert client.context.trace_id == SAMPLED_CALLER.trace_id
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().encode(exported))
    assert ours == encode_spans(exported)  # type: ignore[arg-type]  # it reads them, too


@pytest.mark.parametrize(
    ("sampler", "recorded"), [("always_on", True), ("always_off", False), ("traceidratio", False)]
)
def test_the_environments_sampler_decides(
    sampler: str, recorded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the SDK reads it: from the process's environment."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    tracer, _ = traced()
    span = tracer.start_span("GET /v1/models", kind=SpanKind.SERVER)
    assert span.is_recording() is recorded
    assert span.get_span_context().is_valid  # propagated either way
    tracer.batch.close(1)


def test_past_the_queues_room_spans_are_dropped() -> None:
    tracer, exported = traced({"OTEL_BSP_SCHEDULE_DELAY": "60000", "OTEL_BSP_MAX_QUEUE_SIZE": "3",
                               "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"})  # fmt: skip
    for n in range(5):
        tracer.start_span(f"s{n}").end()
    assert tracer.batch.dropped == 2
    tracer.batch.close(1)
    assert [s.name for s in exported] == ["s0", "s1", "s2"]
