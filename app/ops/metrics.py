"""Prometheus metrics, correct with several workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``python -m app`` sets and empties it at start), every
worker writes its samples to files there and ``/metrics`` on any worker adds them all up; the
open-streams gauge counts only live workers. Without it (an app built in tests), the default
registry of the process serves. The metric objects are created once, when first imported, and
prometheus_client decides then where samples go: the variable must be set before that.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.responses import Response

from app.responses import NO_STORE
from app.settings import BANDS

REQUESTS = Counter("bib_requests", "HTTP requests answered", ["route", "method", "status"])
FIRST_TOKEN = Histogram(
    "bib_time_to_first_token_seconds",
    "From a stream's request to its first token leaving the service",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
TOKENS = Counter("bib_tokens_relayed", "Token events sent to clients, replays included")
GENERATIONS = Counter(
    "bib_generations", "Upstream generations by how they ended", ["outcome"]
)  # completed, failed, cancelled, refused (by the GPU queue)
CACHE = Counter("bib_cache_results", "Generation requests by X-Cache", ["result"])
RATE_LIMITED = Counter("bib_rate_limited", "Requests refused with 429, by quota", ["quota"])
SLOW_REQUESTS = Counter(
    "bib_slow_requests", "Connections closed for a request head or body sent too slowly", ["part"]
)
KEY_REQUESTS = Counter("bib_key_requests", "API requests by the name of their key", ["key"])
UPSTREAM_ERRORS = Counter("bib_upstream_errors", "Ollama failures by error code", ["kind"])
REDIS_ERRORS = Counter("bib_redis_errors", "Failed Redis operations", ["component"])
HOST_SLOTS = Gauge(
    "bib_ollama_host_slots",
    "Generation slots of each Ollama host (OLLAMA_SLOTS), shared by every replica",
    ["host"],
    multiprocess_mode="max",
)
QUEUE_WAITING = Gauge(
    "bib_queue_waiting",
    "Generations of this replica waiting for a slot, by each host they could use and model",
    ["host", "model"],
    multiprocess_mode="livesum",
)
QUEUE_WAIT = Histogram(
    "bib_queue_wait_seconds",
    "How long generations that waited for a slot waited",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
HOST_UP = Gauge(
    "bib_ollama_host_up",
    "1 while an Ollama host serves, 0 while ejected (any worker)",
    ["host"],
    multiprocess_mode="livemin",
)
HOST_IN_FLIGHT = Gauge(
    "bib_ollama_host_in_flight",
    "Generations running on each Ollama host from this replica",
    ["host"],
    multiprocess_mode="livesum",
)
HOST_ERRORS = Counter("bib_ollama_host_errors", "Failures of each Ollama host", ["host"])
AFFINITY = Counter(
    "bib_affinity",
    "Generations routed by conversation affinity: to their warm host (hit), with none known "
    "(miss, by the host chosen), or elsewhere because it was too busy (spill, by the warm host)",
    ["host", "result"],
)
QUEUE_WAITING_BANDS = Gauge(
    "bib_queue_waiting_band",
    "Generations of this replica waiting for a slot, by priority band",
    ["band"],
    multiprocess_mode="livesum",
)
# OpenTelemetry's GenAI client histograms (app.ops.genai), under the names and with the buckets
# and attributes its conventions give, as its Prometheus mapping writes them
GENAI_LABELS = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                "server_address", "server_port"]  # fmt: skip
TOKEN_BUCKETS = tuple(4**n for n in range(14))  # 1 … 67,108,864
SECONDS_BUCKETS = tuple(round(0.01 * 2**n, 2) for n in range(14))  # 0.01 … 81.92
GENAI_TOKENS = Histogram(
    "gen_ai_client_token_usage",
    "Tokens of each upstream generation, by gen_ai_token_type (input, output)",
    [*GENAI_LABELS, "gen_ai_token_type"],
    buckets=TOKEN_BUCKETS,
)
GENAI_DURATION = Histogram(
    "gen_ai_client_operation_duration",
    "Each upstream generation, from its host taking it to its end (error_type set if it failed)",
    [*GENAI_LABELS, "error_type"],
    unit="seconds",
    buckets=SECONDS_BUCKETS,
)
GENAI_FIRST_CHUNK = Histogram(
    "gen_ai_client_operation_time_to_first_chunk",
    "From a host taking a generation to the first chunk it streamed",
    GENAI_LABELS,
    unit="seconds",
    buckets=SECONDS_BUCKETS,
)
GENAI_PER_CHUNK = Histogram(
    "gen_ai_client_operation_time_per_output_chunk",
    "Between one streamed chunk of a generation and the next",
    GENAI_LABELS,
    unit="seconds",
    buckets=SECONDS_BUCKETS,
)
READY = Gauge(
    "bib_ready",
    "1 while the worker is ready as /readyz says (Redis answers, a host serves, not draining)",
    multiprocess_mode="livemin",
)
OPEN_STREAMS = Gauge(
    "bib_open_streams", "Server-sent event streams open now", multiprocess_mode="livesum"
)
FULL_COLLECTIONS = Histogram(
    "bib_gc_full_collection_seconds",
    "Full garbage collections, each of which pauses its worker; they grow with open streams",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


# every label value known before it happens, exported as 0 from the start (``export_known``):
# an alert on a rate reads "no data" for a series that does not exist yet, not 0
KNOWN: tuple[tuple[Counter, str, tuple[str, ...]], ...] = (
    (GENERATIONS, "outcome", ("completed", "failed", "cancelled", "refused")),
    (CACHE, "result", ("hit", "miss", "joined", "bypass")),
    (RATE_LIMITED, "quota", ("requests", "tokens", "concurrency", "queue")),
    (SLOW_REQUESTS, "part", ("head", "body")),
    (UPSTREAM_ERRORS, "kind",
     ("upstream_error", "upstream_unavailable", "upstream_timeout", "model_not_found")),
    (REDIS_ERRORS, "component",
     ("generations", "limiter", "keys", "queue", "responses", "affinity", "usage")),
)  # fmt: skip


def export_known(hosts: Sequence[str]) -> None:
    """Creates every series whose labels are known at a worker's start, at 0: those of
    ``KNOWN``, and each host's error count."""
    for metric, _, values in KNOWN:
        for value in values:
            metric.labels(value)
    for host in hosts:
        HOST_ERRORS.labels(host)
        for result in ("hit", "miss", "spill"):
            AFFINITY.labels(host, result)
    for band in BANDS:
        QUEUE_WAITING_BANDS.labels(band)


def export_models(labels: Sequence[Sequence[str]]) -> None:
    """Creates, at 0, the GenAI series of each operation on a host and model (``labels`` in
    ``GENAI_LABELS`` order), as its host lists the model: successes and both token types."""
    for each in labels:
        GENAI_DURATION.labels(*each, "")
        GENAI_FIRST_CHUNK.labels(*each)
        GENAI_PER_CHUNK.labels(*each)
        for kind in ("input", "output"):
            GENAI_TOKENS.labels(*each, kind)


def time_full_collections(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Times this worker's full garbage collections into ``FULL_COLLECTIONS``; returns the
    undo. Each is recorded from ``loop`` afterwards: inside the collector's callback, a metric's
    lock may already be held by the code the collection interrupted."""
    started = 0.0

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if info["generation"] != 2 or loop.is_closed():
            return
        if phase == "start":
            started = time.perf_counter()
        else:
            loop.call_soon_threadsafe(FULL_COLLECTIONS.observe, time.perf_counter() - started)

    gc.callbacks.append(on_collection)
    return lambda: gc.callbacks.remove(on_collection)


def exposition() -> Response:
    """The Prometheus text format, all workers added up (``GET /metrics``: ``app.ops.probes``)."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped
    return Response(
        generate_latest(registry),
        media_type=CONTENT_TYPE_LATEST,
        headers=NO_STORE,
    )


def forget_worker() -> None:
    """At a worker's exit: its live gauges stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped
