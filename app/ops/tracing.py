"""Traces, when the standard OpenTelemetry environment asks for them.

Traces are on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is
set, unless ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` (the GenAI metrics
likewise with ``..._METRICS_ENDPOINT`` and ``OTEL_METRICS_EXPORTER``: ``app.ops.genai``). The
SDK reads the rest from the same environment: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``, the sampler (``OTEL_TRACES_SAMPLER``), the batching; the exporter
(``app.ops.otlp``) reads the endpoint's headers, timeout, compression and certificates. Each
worker exports its own spans from the SDK's batch thread. Off, nothing is built: no middleware,
no span, and the per-generation cost is one test of ``tracer()``.

Every request is a server span (``TracingMiddleware``) that continues an incoming
``traceparent``; every upstream generation is a client span (``app.ops.genai``), current in the
generation's task, so ``outgoing()`` hands its context to the engine. Joiners and cache hits link
to it through ``traceparent(span)``, kept with the generation and its cache entry.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ops import otlp, spans
from app.ops.request_log import QUIET_PATHS, RequestFacts, facts

SCOPE = "byte_in_bottle"
CLOSING_EXPORT_SECONDS = 2.0  # a collector away must not hold a worker's exit for long
_tracer: spans.Tracer | None = None
_capture = False
# the opt-in to prompt and answer text on spans, as OpenTelemetry's own GenAI instrumentations
# read it (true, or a mode that includes spans); the conventions make content opt-in
CAPTURE_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CAPTURE_VALUES = frozenset({"true", "span_only", "span_and_event"})
_W3C = TraceContextTextMapPropagator()


def _wanted(environ: Mapping[str, str], signal: str) -> bool:
    """Whether ``signal`` (``TRACES`` or ``METRICS``) is to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))  # fmt: skip


def traces_wanted(environ: Mapping[str, str]) -> bool:
    return _wanted(environ, "TRACES")


def metrics_wanted(environ: Mapping[str, str]) -> bool:
    return _wanted(environ, "METRICS")


def start(environ: Mapping[str, str]) -> Callable[[], None]:
    """Builds this worker's tracer and exporter if the environment asks; returns what exports
    the spans left and stops them. The service's own tracer (``app.ops.spans``), not a global
    provider: nothing outside the service records into it, and tests may start and stop it
    again in one process."""
    global _tracer, _capture
    _capture = environ.get(CAPTURE_VARIABLE, "").strip().lower() in CAPTURE_VALUES
    if not traces_wanted(environ):
        return lambda: None
    exporter = otlp.SpanExporter(environ)
    tracer = _tracer = spans.Tracer(SCOPE, exporter.export, environ)

    def stop() -> None:
        global _tracer
        _tracer = None
        tracer.batch.close(CLOSING_EXPORT_SECONDS)
        exporter.shutdown()

    return stop


def tracer() -> spans.Tracer | None:
    """The tracer while traces are exported, else ``None``."""
    return _tracer


def capturing() -> bool:
    """Whether spans record prompt and answer text."""
    return _capture and _tracer is not None


def traceparent(span: trace.Span) -> str:
    """The W3C ``traceparent`` of ``span``, to be kept and linked to later."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


@functools.lru_cache(maxsize=1024)  # the hits of one answer link to one span
def linked(value: str | None) -> SpanContext | None:
    """The span a kept ``traceparent`` names, if it is one."""
    if not value:
        return None
    found = trace.get_current_span(_W3C.extract({"traceparent": value})).get_span_context()
    return found if found.is_valid else None


@functools.cache
def _context_headers() -> frozenset[bytes]:
    """The headers the propagators (``OTEL_PROPAGATORS``) read: without any, nothing to extract."""
    return frozenset(name.lower().encode() for name in propagate.get_global_textmap().fields)


def current(span: trace.Span | None) -> AbstractContextManager[object]:
    """Makes ``span`` the current one inside the block (none: nothing changes)."""
    if span is None:
        return contextlib.nullcontext()
    return trace.use_span(span, end_on_exit=False, record_exception=False)


def outgoing() -> dict[str, str]:
    """The trace headers of a request to an engine: the current span's context."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class TracingMiddleware:
    """Each HTTP request as a server span, under the caller's ``traceparent`` if it sent one,
    named for its route once routed, with what ``RequestFacts`` noted of it as ``bib.*``
    attributes; probes and scrapes (``QUIET_PATHS``) are not traced. Inside
    ``RequestLogMiddleware``, whose facts it reads."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracing = _tracer
        if scope["type"] != "http" or tracing is None or scope["path"] in QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        parent: Context | None = None  # the caller's context, when it sent one
        if any(name in _context_headers() for name, _ in scope["headers"]):
            parent = propagate.extract(Headers(scope=scope))
        method, status = scope["method"], 500
        client = scope.get("client")
        attributes = {"http.request.method": method, "url.path": scope["path"]}
        if client:
            attributes["client.address"] = client[0]

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        span = tracing.start_span(method, parent, SpanKind.SERVER, attributes)
        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send_status)
        finally:
            context.detach(token)
            _describe(span, scope, status, facts(scope))
            span.end()


def _describe(span: trace.Span, scope: Scope, status: int, noted: RequestFacts) -> None:
    """Sets what the request came to, at once (each call to the span takes its lock)."""
    attributes: dict[str, str | int | float | bool] = {"http.response.status_code": status}
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        span.update_name(f"{scope['method']} {route}")
        attributes["http.route"] = route
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
        attributes["error.type"] = str(status)
    for name, value in (
        ("bib.cache", noted.cache),
        ("bib.generation.id", noted.generation),
        ("bib.error", noted.error),
        ("bib.quota.refused", noted.refused),
        ("bib.api_key", noted.key),
        ("bib.time_to_first_token", noted.first_token_seconds),
    ):
        if value is not None:
            attributes[name] = value
    if noted.cache == "JOINED":
        attributes["bib.joined"] = True
    if noted.resumed:
        attributes["bib.resumed"] = True
    if noted.tokens:
        attributes["bib.tokens"] = noted.tokens
    span.set_attributes(attributes)
    producer = linked(noted.produced_by)
    if producer is not None:
        span.add_link(producer)
