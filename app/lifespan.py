"""The lifespan: opens the Ollama and Redis clients once per worker and closes them at exit.

Handlers read them from ``request.state`` (typed by ``State``); pure ASGI middleware reads
``scope["state"]``. Connecting to Redis is lazy, so the service starts, and generates uncached,
while Redis is still down.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypedDict

import httpx
from redis.asyncio import Redis
from starlette.applications import Starlette

from app.completions import Generations
from app.health import CachedCheck
from app.ollama import OllamaClient
from app.settings import Settings

REDIS_SOCKET_TIMEOUT_SECONDS = 1.0


class State(TypedDict):
    settings: Settings
    ollama: OllamaClient
    redis: Redis
    generations: Generations
    ollama_check: CachedCheck[list[dict[str, Any]]]
    redis_check: CachedCheck[bool]
    started_at: float


def lifespan(
    settings: Settings, ollama_transport: httpx.AsyncBaseTransport | None
) -> Callable[[Starlette], AbstractAsyncContextManager[State]]:
    """Builds the lifespan for ``settings``; ``ollama_transport`` replaces aiohttp in tests."""

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[State]:
        ollama = OllamaClient.connect(
            settings.ollama_host,
            first_token_timeout_seconds=settings.upstream_timeout_seconds,
            idle_timeout_seconds=settings.upstream_idle_timeout_seconds,
            transport=ollama_transport,
        )
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        )
        generations = Generations(ollama)
        try:
            yield State(
                settings=settings,
                ollama=ollama,
                redis=redis,
                generations=generations,
                ollama_check=CachedCheck(ollama.models),
                redis_check=CachedCheck(redis.ping),
                started_at=time.monotonic(),
            )
        finally:
            await generations.aclose()
            await ollama.aclose()
            await redis.aclose()

    return run
