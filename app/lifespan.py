"""The lifespan: opens the Ollama and Redis clients once per worker and closes them at exit.

Handlers read them from ``request.state``, typed by ``State``. Connecting to Redis is lazy, so
the service starts, and generates uncached, while Redis is still down. Each worker listens for
stop requests, and keeps its view of the Ollama hosts, for its whole life.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypedDict

import httpx
from starlette.applications import Starlette

from app.access.api_keys import ApiKeys
from app.access.models import Models, everyone
from app.access.quotas import Limits, Quotas
from app.generations.embeddings import Embedder
from app.generations.feeds import READ_BLOCK_MILLISECONDS
from app.generations.generation import Policy
from app.generations.registry import Registry
from app.ops import collection, genai, metrics, tracing
from app.ops.checks import CachedCheck
from app.ops.shutdown import Drain
from app.settings import Settings
from app.store.client import RedisClient
from app.store.client import connect as connect_redis
from app.store.generations import RedisStore
from app.store.responses import ResponseRecords
from app.store.usage import Usage
from app.upstream.affinity import Affinity
from app.upstream.fair_queue import FairQueue
from app.upstream.hosts import Hosts, Timings

REDIS_SOCKET_TIMEOUT_SECONDS = 1.0
# of REDIS_MAX_CONNECTIONS, outside the gate: the stop listener's subscription, the readiness ping
UNGATED_CONNECTIONS = 2
# not bounded (a known limit, README "Configuration"): every client following a generation of
# another worker holds a blocking read's connection, and redis-py refuses a command outright
# when its pool is all used
REDIS_MAX_BLOCKING_CONNECTIONS = 10000


class State(TypedDict):
    settings: Settings
    hosts: Hosts
    redis: RedisClient
    registry: Registry
    embedder: Embedder
    hosts_check: CachedCheck[list[dict[str, Any]]]
    redis_check: CachedCheck[bool]
    quotas: Quotas | None  # None: no quota on and no keys, no limit
    api_keys: ApiKeys
    models: Models  # the service's own view: MODEL_ALIASES, for /v1/health
    responses: ResponseRecords  # the OpenAI Responses API's stored responses
    usage: Usage  # what each API key used, by model and day
    drain: Drain
    started_at: float


def lifespan(
    settings: Settings, upstream_transport: httpx.AsyncBaseTransport | None
) -> Callable[[Starlette], AbstractAsyncContextManager[State]]:
    """Builds the lifespan for ``settings``; ``upstream_transport`` replaces aiohttp in tests."""

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[State]:
        gate = asyncio.Semaphore(settings.redis_max_connections - UNGATED_CONNECTIONS)
        redis = await connect_redis(
            settings.redis_url,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            max_connections=settings.redis_max_connections,  # a backstop behind the gate
        )
        blocking = await connect_redis(
            settings.redis_url,
            socket_timeout=READ_BLOCK_MILLISECONDS / 1000 + REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            max_connections=REDIS_MAX_BLOCKING_CONNECTIONS,
        )
        store = RedisStore(redis, blocking, gate)
        hosts = Hosts.connect(
            settings.engines,
            store,
            first_token_timeout_seconds=settings.upstream_timeout_seconds,
            idle_timeout_seconds=settings.upstream_idle_timeout_seconds,
            timings=Timings.of(settings),
            queue=FairQueue(
                redis,
                max_per_client=settings.queue_max_per_client,
                timeout_seconds=settings.queue_timeout_seconds,
                batch_max_wait_seconds=settings.queue_batch_max_wait_seconds,
                gate=gate,
            ),
            affinity=Affinity(
                redis,
                ttl_seconds=settings.affinity_ttl_seconds,
                spill=settings.affinity_spill,
                gate=gate,
            ),
            transport=upstream_transport,
        )
        registry = Registry(hosts, store, Policy.of(settings), on_slots=hosts.slots_freed)
        usage = Usage(redis, retention_days=settings.usage_retention_days, gate=gate)
        stop_listener = asyncio.create_task(registry.listen())
        await hosts.refresh()  # each host's models, before the first request needs them
        host_keeper = asyncio.create_task(hosts.run())
        drain = Drain(
            settings.shutdown_grace_seconds, refuse=registry.refuse_new, halt=registry.halt
        )
        drain.install()
        metrics.export_known(settings.upstream_urls)
        stop_tracing = tracing.start(os.environ)  # after the fork: each worker exports its own
        stop_metrics = genai.export(os.environ)
        untime_collections = metrics.time_full_collections(asyncio.get_running_loop())
        untune_collector = collection.tune()  # last: what startup built is frozen
        try:
            yield State(
                settings=settings,
                hosts=hosts,
                redis=redis,
                registry=registry,
                embedder=Embedder(
                    hosts,
                    store,
                    ttl_seconds=settings.cache_ttl_seconds,
                    max_bytes=settings.cache_max_bytes,
                ),
                hosts_check=CachedCheck(hosts.check),
                redis_check=CachedCheck(redis.ping),
                quotas=Quotas(
                    redis,
                    defaults=Limits(
                        requests=settings.rate_limit_max,
                        tokens=settings.token_limit_max,
                        concurrency=settings.concurrency_limit,
                    ),
                    window_seconds=settings.rate_limit_window_seconds,
                    token_window_seconds=settings.token_limit_window_seconds,
                    gate=gate,
                )
                if settings.limits_requests
                else None,
                api_keys=ApiKeys(redis, gate=gate),
                models=everyone(settings),
                responses=ResponseRecords(
                    redis, ttl_seconds=settings.responses_ttl_seconds, gate=gate
                ),
                usage=usage,
                started_at=time.monotonic(),
                drain=drain,
            )
        finally:
            untune_collector()
            untime_collections()
            for task in (stop_listener, host_keeper):  # ended before their clients close:
                await _end(task)  # a read left waiting would keep its socket past the loop
            await registry.aclose()
            await usage.flush()  # what its requests, and the generations just ended, used
            await hosts.aclose()
            await redis.aclose()
            await blocking.aclose()
            stop_tracing()  # what is left is flushed
            stop_metrics()
            metrics.forget_worker()

    return run


async def _end(task: asyncio.Task[None]) -> None:
    """Cancels ``task`` until it ends: Python 3.11's ``asyncio.wait_for`` (which redis-py sends
    commands with) drops a cancellation that lands as its command completes."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
