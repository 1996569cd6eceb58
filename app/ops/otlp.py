"""Spans over OTLP/HTTP, in protobuf written here.

The SDK's OTLP exporter builds a protobuf object for every span, attribute and value before
serialising them: 51 µs a cached answer's span on this machine, an eighth of the whole request's
CPU (``scripts/bench``, section ``tracing``). ``SpanEncoder`` writes the same
``ExportTraceServiceRequest`` bytes directly, in about 7 µs, encoding what spans share once (a
test decodes them with ``opentelemetry-proto`` and compares them with the SDK's), and
``SpanExporter`` posts them where the standard variables say:
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as given, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus
``/v1/traces``; ``..._HEADERS``, ``..._TIMEOUT`` (milliseconds, as the specification has it),
``..._COMPRESSION`` (``gzip``) and the certificates, the traces' own variable first.
``Endpoint`` posts the GenAI metrics (``app.ops.histograms``) the same way. A batch the collector
refuses is dropped (logged once a minute): the SDK's exporters retry it until their timeout,
which held a worker's exit for as long when the collector was away.
"""

from __future__ import annotations

import gzip
import logging
import struct
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import requests
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

logger = logging.getLogger(__name__)

HAS_IS_REMOTE, IS_REMOTE = 0x100, 0x200  # SpanFlags: whether a parent or link is remote
# a span as the encoder reads it: the SDK's ReadableSpan, or app.ops.spans.Span, which reads
# the same (the encoder's test compares the two encoders on SDK spans)
Recorded = Any
_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
_FIXED32 = struct.Struct("<I").pack


_SMALL = [bytes((n,)) for n in range(128)]
KEPT_PAIRS = 4096  # encoded attributes kept for reuse: a method, a route, a model recur


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
    value &= (1 << 64) - 1  # a negative int64 as protobuf writes it: ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: bytes, a string, a message."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _any(value: Any) -> bytes:
    """An ``AnyValue``."""
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(7, value)
    return _field(5, b"".join(_field(1, _any(v)) for v in value))  # a sequence: ArrayValue


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated ``KeyValue`` fields; those of strings and whole numbers are kept for the next
    span (most of a request's recur: a method, a route, a status, a model)."""
    if not attributes:
        return b""
    out = []
    for key, value in attributes.items():
        kind = type(value)
        kept = kind in _KEPT_TYPES  # by its type too: True == 1, but they encode apart
        found = _pairs.get((number, key, kind, value)) if kept else None
        if found is None:
            found = _field(number, _field(1, key.encode()) + _field(2, _any(value)))
            if kept:
                if len(_pairs) >= KEPT_PAIRS:
                    _pairs.clear()
                _pairs[number, key, kind, value] = found
        out.append(found)
    return b"".join(out)


_KEPT_TYPES = frozenset({str, int, bool})
_pairs: dict[tuple[int, str, type, Any], bytes] = {}


def _flags(context: SpanContext | None) -> bytes:
    remote = IS_REMOTE if context is not None and context.is_remote else 0
    return _FIXED32(HAS_IS_REMOTE | remote)


# what most spans share, encoded once: the kinds, no status, the flags (field 16, fixed32)
_KINDS = {kind: b"\x30" + _varint(kind.value + 1) for kind in SpanKind}  # the SDK counts from 0
_NO_STATUS = _field(15, b"")
_LOCAL_PARENT, _REMOTE_PARENT = (b"\x85\x01" + _FIXED32(HAS_IS_REMOTE | r) for r in (0, IS_REMOTE))
_TIMES = struct.Struct("<BQBQ").pack  # start and end, fields 7 and 8, fixed64
_names: dict[str, bytes] = {}
# a hit's link to the span that produced its tokens, by trace, span and whether remote
_links: dict[tuple[int, int, bool], bytes] = {}


def _name(name: str) -> bytes:
    found = _names.get(name)
    if found is None:
        if len(_names) >= KEPT_PAIRS:
            _names.clear()
        found = _names[name] = _field(5, name.encode())
    return found


def _link(link: Any) -> bytes:
    to = link.context
    key = (to.trace_id, to.span_id, to.is_remote)
    found = _links.get(key) if not link.attributes else None
    if found is None:
        found = _field(13, b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
                       + b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
                       + _attributes(4, link.attributes)
                       + b"\x35" + _flags(link.context))  # fmt: skip
        if not link.attributes:
            if len(_links) >= KEPT_PAIRS:
                _links.clear()
            _links[key] = found
    return found


def _span(span: Recorded) -> bytes:
    context, parent = span.get_span_context(), span.parent
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
        parts.append(_field(3, state.encode()))
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts += [
        _name(span.name),
        _KINDS[span.kind],
        _TIMES(0x39, span.start_time or 0, 0x41, span.end_time or 0),
        _attributes(9, span.attributes),
    ]
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        parts.append(_field(11, b"\x09" + _FIXED64(event.timestamp) + _field(2, event.name.encode())
                            + _attributes(3, event.attributes)))  # fmt: skip
    parts += [_link(link) for link in span.links]
    status = span.status
    if status.status_code.value or status.description:
        message = _field(2, status.description.encode()) if status.description else b""
        code = b"\x18" + _varint(status.status_code.value) if status.status_code.value else b""
        parts.append(_field(15, message + code))
    else:
        parts.append(_NO_STATUS)
    parts.append(_REMOTE_PARENT if parent is not None and parent.is_remote else _LOCAL_PARENT)
    return b"".join(parts)


class SpanEncoder:
    """Encodes batches of spans; each resource and scope is encoded once and kept."""

    def __init__(self) -> None:
        self._resources: dict[int, tuple[Resource, bytes]] = {}  # by id, the object kept
        self._scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}

    def encode(self, spans: Sequence[Recorded]) -> bytes:
        # grouped by identity: a Resource hashes by serialising its attributes to JSON
        grouped: dict[int, tuple[Resource, dict[int, tuple[Any, list[bytes]]]]] = {}
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope
            by_scope = grouped.setdefault(id(resource), (resource, {}))[1]
            by_scope.setdefault(id(scope), (scope, []))[1].append(_field(2, _span(span)))
        out = []
        for resource, by_scope in grouped.values():
            scoped = b"".join(_field(2, self._scope(scope) + b"".join(encoded))
                              for scope, encoded in by_scope.values())  # fmt: skip
            out.append(_field(1, self._resource(resource) + scoped))
        return b"".join(out)

    def _resource(self, resource: Resource) -> bytes:
        kept = self._resources.get(id(resource))
        if kept is not None:
            return kept[1]
        found = _field(1, _attributes(1, resource.attributes))
        if resource.schema_url:
            found += _field(3, resource.schema_url.encode())
        self._resources[id(resource)] = resource, found
        return found

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        kept = self._scopes.get(id(scope))
        if kept is not None:
            return kept[1]
        found = b""
        if scope is not None:
            version = _field(2, scope.version.encode()) if scope.version else b""
            found = _field(1, _field(1, scope.name.encode()) + version)
            if scope.schema_url:
                found += _field(3, scope.schema_url.encode())
        self._scopes[id(scope)] = scope, found
        return found


class Endpoint:
    """Where one signal (``TRACES``, ``METRICS``) is posted, as the standard variables say:
    each body once, a refusal logged at most once a minute."""

    def __init__(self, environ: Mapping[str, str], signal: str) -> None:
        def setting(name: str, default: str = "") -> str:  # the signal's own variable first
            own = environ.get(f"OTEL_EXPORTER_OTLP_{signal}_{name}")
            return own or environ.get(f"OTEL_EXPORTER_OTLP_{name}", default)

        self.url = environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or (
            environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/")
            + f"/v1/{signal.lower()}"
        )
        headers = {"content-type": "application/x-protobuf"}
        for pair in filter(None, setting("HEADERS").split(",")):
            name, _, value = pair.partition("=")
            headers[urllib.parse.unquote(name).strip()] = urllib.parse.unquote(value).strip()
        self._gzip = setting("COMPRESSION").strip().lower() == "gzip"
        if self._gzip:
            headers["content-encoding"] = "gzip"
        self.timeout_seconds = float(setting("TIMEOUT", "10000")) / 1000  # milliseconds
        self._session = requests.Session()
        self._session.headers.update(headers)
        self._session.verify = setting("CERTIFICATE") or True
        client = setting("CLIENT_CERTIFICATE"), setting("CLIENT_KEY")
        if client[0]:
            self._session.cert = client if client[1] else client[0]
        self._warned_at = float("-inf")

    def post(self, body: bytes, what: str, timeout_seconds: float | None = None) -> bool:
        """Sends ``body`` (``what`` it holds, for the log); ``False`` when it was refused."""
        if self._gzip:
            body = gzip.compress(body)
        timeout = timeout_seconds or self.timeout_seconds
        try:
            answer = self._session.post(self.url, data=body, timeout=timeout)
            refused = None if answer.ok else f"status {answer.status_code}"
        except requests.RequestException as exc:
            refused = str(exc)
        if refused is not None and time.monotonic() - self._warned_at >= 60:
            self._warned_at = time.monotonic()
            logger.warning("dropped %s: %s refused them (%s)", what, self.url, refused)
        return refused is None

    def close(self) -> None:
        self._session.close()


class SpanExporter:
    """Posts each batch of spans once (from ``app.ops.spans``' batch thread)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._encoder = SpanEncoder()
        self.endpoint = Endpoint(environ, "TRACES")

    def export(self, spans: Sequence[Recorded]) -> bool:
        return self.endpoint.post(self._encoder.encode(spans), f"{len(spans)} spans")

    def shutdown(self) -> None:
        self.endpoint.close()
