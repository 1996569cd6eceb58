"""Health endpoints for orchestrators and people; never rate limited, never cached by clients.

``/livez`` checks nothing but that the process serves. ``/readyz`` and ``/v1/health`` share the
cached dependency checks of ``app.ops.checks``; Ollama passes while at least one host serves.
``/v1/health`` calls the service degraded, not unhealthy, when only Redis is down, because
generation still works without it (uncached).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app import VERSION
from app.lifespan import State
from app.responses import NO_STORE, JSONBody


class HealthBody(JSONBody):
    media_type = "application/health+json"


async def livez(request: Request[State]) -> Response:
    return HealthBody({"status": "pass"}, headers=NO_STORE)


async def readyz(request: Request[State]) -> Response:
    if request.state["drain"].draining:
        draining = {"status": "fail", "output": "shutting down"}
        return HealthBody(draining, status_code=503, headers=NO_STORE)
    redis = await request.state["redis_check"]()
    ollama = await request.state["hosts_check"]()
    passed = redis.passed and ollama.passed
    body = {
        "status": "pass" if passed else "fail",
        "checks": {"redis:responseTime": redis.report(), "ollama:responseTime": ollama.report()},
    }
    return HealthBody(body, status_code=200 if passed else 503, headers=NO_STORE)


async def health(request: Request[State]) -> Response:
    redis = await request.state["redis_check"]()
    ollama = await request.state["hosts_check"]()
    ollama_hosts = request.state["hosts"]
    queued = await ollama_hosts.queue_lengths()  # one read for both views of the queue
    status = "healthy" if redis.passed else "degraded"
    if not ollama.passed:
        status = "unhealthy"
    body: dict[str, Any] = {
        "status": status,
        "ollama": "connected" if ollama.passed else "disconnected",
        "redis": "connected" if redis.passed else "disconnected",
        "available_models": [str(model.get("name")) for model in ollama.value or []],
        "ollama_hosts": await ollama_hosts.report(queued["hosts"]),
        "queued_by_model": queued["models"],
        "version": VERSION,
        "uptime_seconds": round(time.monotonic() - request.state["started_at"], 3),
    }
    return JSONBody(body, status_code=503 if status == "unhealthy" else 200, headers=NO_STORE)
