"""The GenAI client histograms of this worker, kept here for OTLP.

The SDK's ``Histogram.record`` takes about 10 µs, and ``time_per_output_chunk`` is recorded for
every streamed chunk: through the SDK, tracing on cost a quarter more CPU per relayed token
(``scripts/bench``, section ``tracing``). A ``Series`` adds a value in about a microsecond; every
``OTEL_METRIC_EXPORT_INTERVAL`` milliseconds (60,000 by default) the worker posts the cumulative
explicit-bucket histograms, encoded by the SDK's OTLP encoder, where ``app.ops.otlp.Endpoint``
says.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from app.ops.otlp import Endpoint

Attributes = tuple[tuple[str, Any], ...]
CLOSING_EXPORT_SECONDS = 1.0  # a collector away must not hold a worker's exit for long


class Series:
    """One histogram's points for one set of attributes, cumulative."""

    __slots__ = ("bounds", "count", "counts", "max", "min", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count, self.sum, self.min, self.max = 0, 0.0, float("inf"), float("-inf")

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # buckets are (low, high]
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)


class Histograms:
    """Args:
    described: each histogram's name, with its unit, description and bucket bounds.
    """

    def __init__(self, described: Mapping[str, tuple[str, str, Sequence[float]]],
                 scope: str, endpoint: Endpoint) -> None:  # fmt: skip
        self._described = described
        self._series: dict[tuple[str, Attributes], Series] = {}
        self._started = time.time_ns()
        self._resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        self._scope = InstrumentationScope(scope)
        self._endpoint = endpoint

    def series(self, name: str, attributes: Attributes) -> Series:
        found = self._series.get((name, attributes))
        if found is None:
            found = self._series[name, attributes] = Series(self._described[name][2])
        return found

    def snapshot(self) -> MetricsData:
        now = time.time_ns()
        points: dict[str, list[HistogramDataPoint]] = {name: [] for name in self._described}
        for (name, attributes), s in self._series.items():
            points[name].append(HistogramDataPoint(
                dict(attributes), self._started, now, s.count, s.sum, list(s.counts),
                s.bounds, s.min, s.max,
            ))  # fmt: skip
        metrics = [
            Metric(name, description, unit,
                   Histogram(found, AggregationTemporality.CUMULATIVE))
            for name, (unit, description, _) in self._described.items()
            if (found := points[name])
        ]  # fmt: skip
        scoped = ScopeMetrics(self._scope, metrics, "")
        return MetricsData([ResourceMetrics(self._resource, [scoped], "")])

    async def run(self, interval_seconds: float) -> None:
        """Exports every ``interval_seconds``, unless the last export still runs. From a daemon
        thread: the exporter blocks, and retries a collector that is away for up to its
        timeout, which must not hold the worker's exit (as the loop's executor would)."""
        exporting: threading.Thread | None = None
        while True:
            await asyncio.sleep(interval_seconds)
            if exporting is None or not exporting.is_alive():
                exporting = threading.Thread(target=self._post, args=(self.snapshot(),),
                                             daemon=True)  # fmt: skip
                exporting.start()

    def close(self) -> None:
        """Exports what is left, and stops: trying for a moment only, as the worker exits."""
        self._post(self.snapshot(), CLOSING_EXPORT_SECONDS)
        self._endpoint.close()

    def _post(self, data: MetricsData, timeout_seconds: float | None = None) -> None:
        body = encode_metrics(data).SerializeToString()
        self._endpoint.post(body, "the GenAI metrics", timeout_seconds)
