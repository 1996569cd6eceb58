"""Tickets: members of a Redis sorted set, each scored by when it lapses unless its holder renews
it. Whoever holds a ticket renews it while it works; a dead worker's tickets lapse by themselves,
so nothing it held is counted for long, and nothing needs cleaning up after it.

The service keeps four kinds, all built here (and, atomically with other work, by the Lua
scripts that admit a request and seat a queued generation, ``quotas.lua`` and
``fair_queue.lua``, which follow the same rule):

    bib:{hosts}:in-flight:<url>  the generations running on an upstream host (its GPU slots)
    bib:rl:{<client>}:running    the generations a client leads (its concurrency quota)
    bib:{<g>}:watchers           the clients following a generation from other workers

Each function adds its commands to a redis-py pipeline (``app.store.pipeline``'s ``Queue``), so
they ride in the round trip of their caller's turn; every write also sets the set's expiry, so
an idle set leaves Redis with its last ticket.
"""

from __future__ import annotations

import math
import time
from typing import Any

from redis.commands.core import AsyncScript

from app.store.client import RedisClient, register_script


def add(pipe: Any, key: str, tickets: list[str], lease_seconds: float, *, renew: bool = False
        ) -> None:  # fmt: skip
    """Adds ``tickets`` for ``lease_seconds``; with ``renew``, only pushes back the lapse of
    those that exist (a ticket given back stays given back)."""
    pipe.zadd(key, dict.fromkeys(tickets, time.time() + lease_seconds), xx=renew)
    pipe.expire(key, math.ceil(lease_seconds))


def drop(pipe: Any, key: str, tickets: list[str]) -> None:
    """Gives ``tickets`` back."""
    pipe.zrem(key, *tickets)


def prune(pipe: Any, key: str) -> None:
    """Removes the lapsed tickets."""
    pipe.zremrangebyscore(key, "-inf", time.time())


def count(pipe: Any, key: str) -> None:
    """Counts the tickets that have not lapsed (one reply)."""
    pipe.zcount(key, f"({time.time()}", "+inf")


def least_taken(redis: RedisClient) -> AsyncScript:
    """The script that gives a new ticket to the set, among ``KEYS``, with the fewest live
    tickets (ties to the first: the caller shuffles), and answers its index; ``ARGV``: now, the
    ticket, its lease in seconds."""
    return register_script(redis, __package__, "least_taken.lua")
