"""Looking into Redis while a test runs: the commands the server ran, the pipelines a client
opened."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from app.store.client import RedisClient
from harness.servers import redis_client


def redis_calls(url: str, command: str) -> int:
    """How many times the Redis server (every node of a cluster) has run ``command``, those
    inside scripts included."""
    with redis_client(url) as client:
        if isinstance(client, redis.RedisCluster):
            nodes = client.get_nodes()  # type: ignore[no-untyped-call]  # untyped
            stats = [client.info("commandstats", target_nodes=node) for node in nodes]
        else:
            stats = [client.info("commandstats")]
    return sum(int(s.get(f"cmdstat_{command}", {}).get("calls", 0)) for s in stats)


def count_pipelines(redis: RedisClient) -> Callable[[], int]:
    """Counts the pipelines opened on ``redis`` from now on (a spy: they still run)."""
    opened = 0
    pipeline = redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal opened
        opened += 1
        return pipeline(*args, **kwargs)

    redis.pipeline = counting  # type: ignore[method-assign]
    return lambda: opened
