"""Connects to Redis: one server, or a Redis Cluster when ``REDIS_URL`` says so.

``redis://``, ``rediss://`` and ``unix://`` name one server. ``redis+cluster://host:port`` (or
``rediss+cluster://``) names any node of a cluster: the client learns the others and routes each
command to the node holding its key's slot. Every key the service writes carries a hash tag
(``{...}``), so each script and each key group it touches lives in one slot.
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

RedisClient: TypeAlias = Redis | RedisCluster
CLUSTER_SUFFIX = "+cluster"

# What a failing Redis raises. redis-py 8.1's async cluster client also raises AttributeError
# (its connection's writer is None) when a topology reload after a node failure closes a
# connection that another command is still opening: seen in tests/test_faults.py.
REDIS_FAULTS: tuple[type[Exception], ...] = (RedisError, OSError, AttributeError)


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
