"""One upstream generation under OpenTelemetry's GenAI conventions: its client span and the four
client histograms (``app.ops.metrics``' ``GENAI_*`` on ``/metrics``, and over OTLP when exported:
``app.ops.histograms``).

The span, named ``"{gen_ai.operation.name} {gen_ai.request.model}"`` (``chat llama3.2``), starts
with the generation, so it also covers a wait for a GPU slot (``bib.queue.*``), and gets the
engine (``gen_ai.provider.name``) and its address once a host takes it. The histograms time the
host's part alone, from taking the generation to its end. Prompt and answer text are recorded
only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` opts in (``app.ops.tracing``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from app.ops import metrics, otlp, tracing
from app.ops.histograms import Attributes, Histograms, Series

OPERATION_NAMES = {"chat": "chat", "generate": "text_completion"}  # by the request's kind
TOKEN_USAGE = "gen_ai.client.token.usage"
DURATION = "gen_ai.client.operation.duration"
FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
PER_CHUNK = "gen_ai.client.operation.time_per_output_chunk"
DESCRIBED = {  # for OTLP: each histogram's unit, description and bucket bounds
    TOKEN_USAGE: ("{token}", "Number of input and output tokens used", metrics.TOKEN_BUCKETS),
    DURATION: ("s", "GenAI operation duration", metrics.SECONDS_BUCKETS),
    FIRST_CHUNK: ("s", "Time to receive the first chunk in a streaming operation",
                  metrics.SECONDS_BUCKETS),
    PER_CHUNK: ("s", "Time between consecutive chunks in a streaming operation",
                metrics.SECONDS_BUCKETS),
}  # fmt: skip
_histograms: Histograms | None = None  # while exported over OTLP
# the request parameters the conventions name, by their Ollama option names
PARAMETERS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "num_predict": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "stop": "gen_ai.request.stop_sequences",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}


def export(environ: Mapping[str, str]) -> Callable[[], None]:
    """Exports the histograms over OTLP every ``OTEL_METRIC_EXPORT_INTERVAL`` milliseconds
    if the environment asks (``app.ops.tracing``); returns what exports the rest and stops."""
    global _histograms
    if not tracing.metrics_wanted(environ):
        return lambda: None
    endpoint = otlp.Endpoint(environ, "METRICS")
    histograms = _histograms = Histograms(DESCRIBED, tracing.SCOPE, endpoint)
    interval = float(environ.get("OTEL_METRIC_EXPORT_INTERVAL") or 60000) / 1000
    task = asyncio.get_running_loop().create_task(histograms.run(interval), name="otlp metrics")

    def stop() -> None:
        global _histograms
        _histograms = None
        task.cancel()
        histograms.close()

    return stop


def labels(operation: str, engine: str, model: str, host: str) -> tuple[str, str, str, str, str]:
    """The GenAI histograms' labels of ``operation`` on ``model`` at ``host`` (a URL)."""
    parts = urlsplit(host)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return operation, engine, model, parts.hostname or "", str(port)


def listed(host: str, engine: str, models: list[str]) -> None:
    """A host listed ``models``: their series exist from now on, at 0."""
    metrics.export_models([labels(op, engine, m, host) for m in models
                           for op in OPERATION_NAMES.values()])  # fmt: skip


class Operation:
    """One generation's span and measures, fed its engine's chunks (``placed`` once a host
    takes it, again on a retry elsewhere; ``chunk`` for each; ``ended`` once)."""

    def __init__(self, kind: str, model: str, *, stream: bool, generation_id: str,
                 content: Callable[[], Mapping[str, Any]]) -> None:  # fmt: skip
        """``content``: what the request asks (``CompletionRequest.content``), read only
        while traced."""
        self.name = OPERATION_NAMES[kind]
        self.model = model
        self._started = time.perf_counter()
        self._placed_at = 0.0
        self._last = 0.0  # when the last chunk came; 0.0 before the first
        self._labels: tuple[str, ...] | None = None
        self._per_chunk: Any = None  # the labelled histogram, bound once placed
        self._otlp_per_chunk: Series | None = None  # and its OTLP twin, when exported
        self._queued = False
        tracer = tracing.tracer()
        self.span: Span | None = None
        if tracer is not None:
            asked = content()
            attributes = _request_attributes(asked, stream)
            attributes["gen_ai.response.id"] = generation_id
            self.span = tracer.start_span(f"{self.name} {self.model}", kind=SpanKind.CLIENT,
                                          attributes=attributes)  # fmt: skip
            if tracing.capturing():
                self.span.set_attributes(_messages(asked))

    @property
    def traceparent(self) -> str:
        return "" if self.span is None else tracing.traceparent(self.span)

    def queued(self, position: int) -> None:
        if self.span is not None and not self._queued:
            self.span.set_attribute("bib.queue.position", position)
        self._queued = True

    def placed(self, host: str, engine: str) -> None:
        self._placed_at, self._last = time.perf_counter(), 0.0
        self._labels = labels(self.name, engine, self.model, host)
        self._per_chunk = metrics.GENAI_PER_CHUNK.labels(*self._labels)
        if _histograms is not None:
            self._otlp_per_chunk = _histograms.series(PER_CHUNK, self._attributes())
        if self.span is not None:
            self.span.set_attributes({
                "gen_ai.provider.name": engine, "server.address": self._labels[3],
                "server.port": int(self._labels[4]), "bib.upstream.host": host,
            })  # fmt: skip
            if self._queued:
                self.span.set_attribute("bib.queue.wait", self._placed_at - self._started)

    def chunk(self) -> None:
        if self._labels is None:
            return
        now = time.perf_counter()
        if self._last:
            self._per_chunk.observe(now - self._last)
            if self._otlp_per_chunk is not None:
                self._otlp_per_chunk.add(now - self._last)
        else:
            metrics.GENAI_FIRST_CHUNK.labels(*self._labels).observe(now - self._placed_at)
            self._record(FIRST_CHUNK, now - self._placed_at)
            if self.span is not None:
                self.span.set_attribute("gen_ai.response.time_to_first_chunk",
                                        now - self._placed_at)  # fmt: skip
        self._last = now

    def ended(self, stats: Mapping[str, Any] | None, error: str | None,
              answer: Callable[[], str]) -> None:  # fmt: skip
        """The generation ended: with the engine's ``stats``, or the ``error`` code; ``answer``
        gives its text, asked for only when content is captured."""
        if self._labels is not None:
            self._measure(stats, error)
        span = self.span
        if span is None:
            return
        if error is not None:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", error)
        if stats is not None:
            reason = str(stats.get("done_reason") or "stop")
            span.set_attributes({
                "gen_ai.response.finish_reasons": [reason],
                "gen_ai.usage.input_tokens": int(stats.get("prompt_eval_count") or 0),
                "gen_ai.usage.output_tokens": int(stats.get("eval_count") or 0),
            })  # fmt: skip
            if tracing.capturing():
                span.set_attribute("gen_ai.output.messages", orjson.dumps([{
                    "role": "assistant", "finish_reason": reason,
                    "parts": [{"type": "text", "content": answer()}],
                }]).decode())  # fmt: skip
        span.end()

    def _measure(self, stats: Mapping[str, Any] | None, error: str | None) -> None:
        assert self._labels is not None
        seconds = time.perf_counter() - self._placed_at
        metrics.GENAI_DURATION.labels(*self._labels, error or "").observe(seconds)
        self._record(DURATION, seconds, (("error.type", error),) if error else ())
        if stats is None:
            return
        for kind, field in (("input", "prompt_eval_count"), ("output", "eval_count")):
            count = int(stats.get(field) or 0)
            metrics.GENAI_TOKENS.labels(*self._labels, kind).observe(count)
            self._record(TOKEN_USAGE, count, (("gen_ai.token.type", kind),))

    def _record(self, name: str, value: float, more: Attributes = ()) -> None:
        """Adds ``value`` to the OTLP histogram ``name``, while exported."""
        if _histograms is not None:
            _histograms.series(name, self._attributes() + more).add(value)

    def _attributes(self) -> Attributes:
        assert self._labels is not None
        operation, engine, model, address, port = self._labels
        return (("gen_ai.operation.name", operation), ("gen_ai.provider.name", engine),
                ("gen_ai.request.model", model), ("server.address", address),
                ("server.port", int(port)))  # fmt: skip


def _request_attributes(content: Mapping[str, Any], stream: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION_NAMES[content["kind"]],
        "gen_ai.request.model": content["model"],
    }
    if stream:  # the conventions: set if and only if streaming
        attributes["gen_ai.request.stream"] = True
    options = content.get("options") or {}
    for option, attribute in PARAMETERS.items():
        value = options.get(option)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, int | float | list) and not isinstance(value, bool):
            attributes[attribute] = value
    return attributes


def _messages(content: Mapping[str, Any]) -> dict[str, str]:
    """The prompt as the conventions' opt-in attributes (JSON, in their parts schema)."""

    def parts(text: Any) -> list[dict[str, Any]]:
        return [{"type": "text", "content": text if isinstance(text, str) else str(text)}]

    found: dict[str, str] = {}
    if content.get("system"):
        found["gen_ai.system_instructions"] = orjson.dumps(parts(content["system"])).decode()
    if content["kind"] == "chat":
        messages = [{"role": m.get("role"), "parts": parts(m.get("content", ""))}
                    for m in content.get("messages", [])]  # fmt: skip
    else:
        messages = [{"role": "user", "parts": parts(content.get("prompt", ""))}]
    found["gen_ai.input.messages"] = orjson.dumps(messages).decode()
    return found
