"""Health endpoints for orchestrators, people and Prometheus; never rate limited, never cached
by clients.

``/livez`` checks nothing but that the process serves. ``/readyz`` and ``/v1/health`` share the
cached dependency checks of ``app.ops.checks``; Ollama passes while at least one host serves.
``/v1/health`` calls the service degraded, not unhealthy, when only Redis is down, because
generation still works without it (uncached).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypedDict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import VERSION
from app.ops import metrics
from app.ops.checks import CachedCheck
from app.ops.shutdown import Drain
from app.responses import NO_STORE, JSONBody


class Hosts(Protocol):
    """What the probes read of the upstream hosts (``app.upstream.hosts.Hosts``)."""

    async def queue_lengths(self) -> dict[str, dict[str, int]]: ...
    async def report(self, queued: Mapping[str, int]) -> list[dict[str, Any]]: ...


class Models(Protocol):
    """The service's own view of the models (``app.access.models.everyone``)."""

    def listed(self, names: Iterable[str]) -> list[tuple[str, str | None]]: ...


class State(TypedDict):
    """The part of the worker's state (``app.lifespan.State``) that the probes read."""

    drain: Drain
    redis_check: CachedCheck[bool]
    hosts_check: CachedCheck[list[dict[str, Any]]]
    hosts: Hosts
    models: Models
    started_at: float


class HealthBody(JSONBody):
    media_type = "application/health+json"


async def livez(request: Request[State]) -> Response:
    return HealthBody({"status": "pass"}, headers=NO_STORE)


async def readyz(request: Request[State]) -> Response:
    passed, body = await _readiness(request)
    return HealthBody(body, status_code=200 if passed else 503, headers=NO_STORE)


async def scrape(request: Request[State]) -> Response:
    """``GET /metrics``, with ``bib_ready`` as ``/readyz`` would answer now: an alert on it does
    not depend on an orchestrator probing."""
    await _readiness(request)
    return metrics.exposition()


async def _readiness(request: Request[State]) -> tuple[bool, dict[str, Any]]:
    """Whether this worker is ready, and why, as ``/readyz`` says it; noted in ``bib_ready``."""
    if request.state["drain"].draining:
        metrics.READY.set(0)
        return False, {"status": "fail", "output": "shutting down"}
    redis = await request.state["redis_check"]()
    upstream = await request.state["hosts_check"]()
    passed = redis.passed and upstream.passed
    metrics.READY.set(1 if passed else 0)
    return passed, {
        "status": "pass" if passed else "fail",
        "checks": {"redis:responseTime": redis.report(), "ollama:responseTime": upstream.report()},
    }


async def health(request: Request[State]) -> Response:
    redis = await request.state["redis_check"]()
    upstream = await request.state["hosts_check"]()
    hosts = request.state["hosts"]
    queued = await hosts.queue_lengths()  # one read for every view of the queue
    status = "healthy" if redis.passed else "degraded"
    served = request.state["models"].listed(
        str(model.get("name")) for model in upstream.value or []
    )
    if not upstream.passed:
        status = "unhealthy"
    body: dict[str, Any] = {
        "status": status,
        "ollama": "connected" if upstream.passed else "disconnected",
        "redis": "connected" if redis.passed else "disconnected",
        # and the aliases of MODEL_ALIASES beside them, marked so
        "available_models": [name for name, _ in served],
        "aliases": {alias: target for alias, target in served if target is not None},
        "ollama_hosts": await hosts.report(queued["hosts"]),
        "queued_by_model": queued["models"],
        "queued_by_band": queued["bands"],
        "version": VERSION,
        "uptime_seconds": round(time.monotonic() - request.state["started_at"], 3),
    }
    return JSONBody(body, status_code=503 if status == "unhealthy" else 200, headers=NO_STORE)


ROUTES = [
    Route("/livez", livez),
    Route("/readyz", readyz),
    Route("/v1/health", health),
    Route("/metrics", scrape),
]
