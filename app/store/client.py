"""Connects to Redis: one server, or a Redis Cluster when ``REDIS_URL`` says so.

``redis://``, ``rediss://`` and ``unix://`` name one server. ``redis+cluster://host:port`` (or
``rediss+cluster://``) names any node of a cluster: the client learns the others and routes each
command to the node holding its key's slot. Every key the service writes carries a hash tag
(``{...}``), so each script and each key group it touches lives in one slot.

``Guarded`` is how every component meets a failing Redis: the error becomes ``RedisUnavailable``
(the caller decides how to degrade), and for ``RETRY_AFTER_SECONDS`` after it calls fail at once
without touching the network, so an outage costs a request no connect timeout; it is logged at
most once a minute per component, counted in metrics, and recovery needs nothing. Components
that share a client share its ``gate``: at most that many of their commands run at once, so a
burst of thousands of generations waits for a connection instead of opening one each
(``REDIS_MAX_CONNECTIONS``; a cluster client would not wait but fail, hence a gate of our own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeAlias, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from app.ops import metrics

logger = logging.getLogger(__name__)
T = TypeVar("T")

RedisClient: TypeAlias = Redis | RedisCluster
CLUSTER_SUFFIX = "+cluster"

# What a failing Redis raises. redis-py 8.1's async cluster client also raises AttributeError
# (its connection's writer is None) when a topology reload after a node failure closes a
# connection that another command is still opening: seen in tests/system/test_faults.py. Under
# uvloop, which uvicorn runs, the same race raises RuntimeError ("unable to perform operation on
# <TCPTransport closed=True ...>; the handler is closed"): seen there too, and reproduced by
# tests/unit/access/test_quotas.py on uvloop. Only Redis calls run where these are caught.
REDIS_FAULTS: tuple[type[Exception], ...] = (RedisError, OSError, AttributeError, RuntimeError)
RETRY_AFTER_SECONDS = 1.0
LOG_EVERY_SECONDS = 60.0


class RedisUnavailable(Exception):
    """Redis did not answer (or failed a moment ago); the caller degrades."""


class Guarded:
    """Runs one component's Redis calls; see the module docstring.

    Args:
        component: the ``bib_redis_errors`` label, and the log's subject.
        consequence: what an outage means for it, said in the log line.
        retry_after_seconds: how long after a failure calls fail without being tried.
        gate: shared by the components of one client; ``None``: ungated.
    """

    def __init__(
        self,
        component: str,
        consequence: str,
        *,
        retry_after_seconds: float = RETRY_AFTER_SECONDS,
        gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.failures = 0
        self._gate = gate
        self._component = component
        self._consequence = consequence
        self._retry_after_seconds = retry_after_seconds
        self._down_until = 0.0
        self._logged_at = -LOG_EVERY_SECONDS

    async def __call__(self, operation: Callable[[], Awaitable[T]], *, gated: bool = True) -> T:
        """Runs ``operation``; ``gated=False`` for one on a client of its own, outside the gate."""
        if time.monotonic() < self._down_until:
            raise RedisUnavailable("Redis was unreachable a moment ago")
        try:
            if self._gate is None or not gated:
                return await operation()
            async with self._gate:
                return await operation()
        except REDIS_FAULTS as exc:
            self.failures += 1
            metrics.REDIS_ERRORS.labels(self._component).inc()
            now = time.monotonic()
            self._down_until = now + self._retry_after_seconds
            if now - self._logged_at >= LOG_EVERY_SECONDS:
                self._logged_at = now
                logger.warning("Redis unavailable to the %s, %s: %s", self._component,
                               self._consequence, exc)  # fmt: skip
            raise RedisUnavailable(str(exc)) from exc


def is_cluster(url: str) -> bool:
    return url.partition("://")[0].endswith(CLUSTER_SUFFIX)


async def connect(url: str, **options: Any) -> RedisClient:
    """A client for ``url`` (see the module docstring); ``options`` go to redis-py as they are
    (for a cluster, ``max_connections`` is per node).

    A cluster client learns the topology here, when it can (else on first use): redis-py 8.1
    breaks a connection now and then (see ``REDIS_FAULTS``) when a burst of first commands that
    reload a Lua script races its first discovery of the nodes.
    """
    if not is_cluster(url):
        return Redis.from_url(url, **options)
    scheme, _, rest = url.partition("://")
    client = RedisCluster.from_url(f"{scheme.removesuffix(CLUSTER_SUFFIX)}://{rest}", **options)
    with contextlib.suppress(*REDIS_FAULTS):  # down now: the service starts anyway
        await client.initialize()
    return client


def register_script(redis: RedisClient, package: str | None, name: str) -> AsyncScript:
    """The Lua script in file ``name`` of ``package`` (package data), registered on ``redis``:
    called by its SHA, and loaded again by redis-py when the server has lost it."""
    assert package is not None  # a module of a package: __package__ is set
    return redis.register_script(resources.files(package).joinpath(name).read_text())
