"""The service's spans, made, sampled and batched here rather than by the SDK's TracerProvider.

The SDK's span took 28 µs to start, describe and end (each span a lock and a validated,
bounded attribute map; a read-only copy at its end), the largest part of what tracing added to a
cached answer's ~400 µs; this one takes a few (``scripts/bench``, section ``tracing``). It is an
``opentelemetry.trace.Span``, so the API's contexts, propagation and links take it, and it reads
as the SDK's ``ReadableSpan`` does, for the encoder (``app.ops.otlp``). What is not the service's
to decide is the SDK's: the sampler (``OTEL_TRACES_SAMPLER`` and its argument) and the resource
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), read from the environment by the SDK's own
provider. The service sets only attributes of the types OTLP carries, so none is checked.

Ended spans wait in a ``Batch`` and leave from a thread of its own every ``OTEL_BSP_SCHEDULE_DELAY``
milliseconds (5,000), or at once when ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512) are waiting; past
``OTEL_BSP_MAX_QUEUE_SIZE`` (2,048) they are dropped, as the SDK does.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
UNSET = Status(StatusCode.UNSET)


class Span(trace.Span):
    """A span being recorded; once ended, it waits in its tracer's batch."""

    dropped_attributes = dropped_events = dropped_links = 0  # nothing is bounded

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: dict[str, Any], tracer: Tracer) -> None:  # fmt: skip
        self.name, self.kind = name, kind
        self.context, self.parent = context, parent
        self.attributes = attributes
        self.events: list[Event] = []
        self.links: list[Link] = []
        self.status = UNSET
        self.start_time, self.end_time = time.time_ns(), 0
        self.resource, self.instrumentation_scope = tracer.resource, tracer.scope
        self._tracer = tracer

    def get_span_context(self) -> SpanContext:
        return self.context

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self.events.append(Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        self.links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        self.name = name

    def is_recording(self) -> bool:
        return not self.end_time

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:  # fmt: skip
        self.add_event("exception", {"exception.type": type(exception).__name__,
                                     "exception.message": str(exception)}, timestamp)  # fmt: skip

    def end(self, end_time: int | None = None) -> None:
        if not self.end_time:
            self.end_time = end_time or time.time_ns()
            self._tracer.batch.add(self)


class Batch:
    """Ended spans on their way to ``export``, from a daemon thread."""

    def __init__(self, export: Callable[[Sequence[Span]], object],
                 environ: Mapping[str, str]) -> None:  # fmt: skip
        self._export = export
        self._delay = float(environ.get("OTEL_BSP_SCHEDULE_DELAY") or 5000) / 1000
        self._most = int(environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512)
        self._room = int(environ.get("OTEL_BSP_MAX_QUEUE_SIZE") or 2048)
        self._spans: collections.deque[Span] = collections.deque()  # appends are thread-safe
        self._wake = threading.Event()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="bib spans", daemon=True)
        self._thread.start()

    def add(self, span: Span) -> None:
        if len(self._spans) >= self._room:
            self.dropped += 1
            return
        self._spans.append(span)
        if len(self._spans) >= self._most:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._flush()
        self._flush()  # what ended before the close

    def _flush(self) -> None:
        while self._spans:
            batch = [self._spans.popleft() for _ in range(min(self._most, len(self._spans)))]
            self._export(batch)

    def close(self, timeout_seconds: float) -> None:
        """Exports what is waiting, within ``timeout_seconds``."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout_seconds)


class Tracer:
    """Starts the service's spans: sampled as the environment says, each trace and span id
    random, as the SDK's."""

    def __init__(self, scope: str, export: Callable[[Sequence[Span]], object],
                 environ: Mapping[str, str]) -> None:  # fmt: skip
        configured = TracerProvider()  # read, never used: what the environment configures
        self._sampler = configured.sampler
        self.resource = configured.resource
        self.scope = InstrumentationScope(scope)
        self.batch = Batch(export, environ)

    def start_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL,
                   attributes: Mapping[str, Any] | None = None) -> trace.Span:  # fmt: skip
        """A span under the one current in ``context`` (the current context if ``None``)."""
        current = trace.get_current_span(context).get_span_context()
        parent = current if current.is_valid else None
        trace_id = random.getrandbits(128) if parent is None else parent.trace_id
        found = dict(attributes or {})
        verdict = self._sampler.should_sample(context, trace_id, name, kind, found)
        state = parent.trace_state if parent is not None else None
        decision = verdict.decision
        sampled = decision is Decision.RECORD_AND_SAMPLE
        ids = SpanContext(trace_id, random.getrandbits(64), is_remote=False,
                          trace_flags=SAMPLED if sampled else TraceFlags(0),
                          trace_state=verdict.trace_state or state)  # fmt: skip
        if decision is Decision.DROP:
            return trace.NonRecordingSpan(ids)
        if verdict.attributes:
            found.update(verdict.attributes)
        return Span(name, ids, parent, kind, found, self)
