"""Every Redis operation of the service's generations: keys, scripts, and what a failure means.

Layout (``{...}`` is the Redis Cluster hash tag: a generation's keys share one slot, and so do a
request content's keys, so each script and pipeline stays within a slot):

    bib:{<sha256>}:cache      finished completion (``cache.py`` format), TTL ``CACHE_TTL``
    bib:{<sha256>}:live       id of the generation producing this content now; a lease of
                              ``LEASE_SECONDS`` its leader renews, so a dead worker's claim expires
    bib:{<g>}:meta            the generation's content hash and model (for lookups by id)
    bib:{<g>}:events          a stream of token batches, then one ``done`` or ``error`` entry
    bib:{<g>}:lease           exists while the leader's worker is alive
    bib:{<g>}:watchers        clients on other workers, scored by when their presence expires
    bib:stop                  pub/sub channel: ids of generations a client asked to stop
    bib:{hosts}:in-flight:<url>  generations running on that Ollama host, scored by when their
                              ticket expires (``hosts.py``); one tag, so one script sees them all

Failures: every Redis error becomes ``StoreUnavailable``. After one, the store refuses calls for
``RETRY_AFTER_SECONDS`` without touching the network, so an outage costs requests nothing but a
bypassed cache; it says so in the log at most once a minute and recovers by itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from app import metrics
from app.redisclient import REDIS_FAULTS, RedisClient

logger = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_SECONDS = 5.0
WATCH_SECONDS = 3.0  # a remote client's presence lasts this long unless renewed
STREAM_RETENTION_SECONDS = 600  # a finished generation's events stay resumable this long
RETRY_AFTER_SECONDS = 1.0
LOG_EVERY_SECONDS = 60.0
STOP_CHANNEL = "bib:stop"

# Cache hit, or lead the generation, or join the one that runs: one round trip for every request.
_CLAIM = """
if ARGV[3] == '1' then
  local hit = redis.call('GET', KEYS[1])
  if hit then return {'hit', hit, redis.call('PTTL', KEYS[1])} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'lead', ARGV[1]} end
return {'join', redis.call('GET', KEYS[2])}
"""
# Give up the claim only if it is still ours (a slow leader must not free a successor's).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# The least busy of the candidate hosts (KEYS, shuffled by the caller, so ties go at random)
# takes the ticket; expired tickets (of dead workers) are dropped first.
_PICK_HOST = """
local now, best, fewest = tonumber(ARGV[1]), 1, nil
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local count = redis.call('ZCARD', key)
  if fewest == nil or count < fewest then best, fewest = i, count end
end
redis.call('ZADD', KEYS[best], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[best], math.ceil(tonumber(ARGV[3])))
return best - 1
"""


class StoreUnavailable(Exception):
    """Redis did not answer; callers degrade (no cache, no joining across workers)."""


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: Literal["hit", "lead", "join"]
    value: bytes  # the cache entry for a hit, else the generation id
    ttl_seconds: float = 0.0  # how long a hit's entry has left


def content_key(sha: str, name: str) -> str:
    return f"bib:{{{sha}}}:{name}"


def generation_key(generation: str, name: str) -> str:
    return f"bib:{{{generation}}}:{name}"


class RedisStore:
    """Args:
    redis: the client for quick commands, with a short socket timeout.
    blocking: the client for blocking stream reads, whose socket timeout outlasts the block.
    """

    def __init__(self, redis: RedisClient, blocking: RedisClient) -> None:
        self.redis = redis
        self._blocking = blocking
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._pick_host = redis.register_script(_PICK_HOST)
        self._down_until = 0.0
        self._logged_at = -LOG_EVERY_SECONDS

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if time.monotonic() < self._down_until:
            raise StoreUnavailable("Redis was unreachable a moment ago")
        try:
            return await operation()
        except REDIS_FAULTS as exc:
            metrics.REDIS_ERRORS.labels("generations").inc()
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            if time.monotonic() - self._logged_at >= LOG_EVERY_SECONDS:
                self._logged_at = time.monotonic()
                logger.warning("Redis unavailable, serving without cache and joining: %s", exc)
            raise StoreUnavailable(str(exc)) from exc

    async def claim(self, sha: str, generation: str, *, read_cache: bool) -> Claim:
        keys = [content_key(sha, "cache"), content_key(sha, "live")]
        args: list[str | int] = [generation, int(LEASE_SECONDS * 1000), int(read_cache)]
        outcome, value, *ttl = await self._call(lambda: self._claim(keys=keys, args=args))
        return Claim(outcome.decode(), value, ttl[0] / 1000 if ttl else 0.0)

    async def cached(self, sha: str) -> bytes | None:
        return await self._get(content_key(sha, "cache"))

    async def meta(self, generation: str) -> bytes | None:
        return await self._get(generation_key(generation, "meta"))

    async def _get(self, key: str) -> bytes | None:
        # the client is built without decode_responses, so values are bytes
        return cast(bytes | None, await self._call(lambda: self.redis.get(key)))

    async def append(self, generation: str, entry: dict[str, bytes], *, first: bool) -> None:
        """Adds one entry to the generation's events (the first one also sets their TTL)."""
        key = generation_key(generation, "events")
        if not first:
            await self._call(lambda: self.redis.xadd(key, entry))  # type: ignore[arg-type]
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, entry)  # type: ignore[arg-type]
            pipe.expire(key, STREAM_RETENTION_SECONDS)
            await self._call(pipe.execute)

    async def renew(self, generation: str, sha: str | None, meta: bytes, meta_ttl: int) -> int:
        """Renews the leader's lease, claim and the generation's meta (what it is, to find it by
        id); returns how many clients follow on other workers."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(generation_key(generation, "meta"), meta, ex=meta_ttl)
            pipe.set(generation_key(generation, "lease"), 1, px=int(LEASE_SECONDS * 1000))
            if sha is not None:
                pipe.pexpire(content_key(sha, "live"), int(LEASE_SECONDS * 1000))
            pipe.expire(generation_key(generation, "events"), STREAM_RETENTION_SECONDS)
            pipe.zcount(generation_key(generation, "watchers"), time.time(), "+inf")
            results: list[Any] = await self._call(pipe.execute)
        return int(results[-1])

    async def finish(
        self,
        generation: str,
        sha: str | None,
        terminal: dict[str, bytes],
        cache_entry: bytes | None,
        cache_ttl_seconds: int,
    ) -> None:
        """Ends the events with ``terminal``, caches a finished completion, frees the claim."""
        events = generation_key(generation, "events")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(events, terminal)  # type: ignore[arg-type]
            pipe.expire(events, STREAM_RETENTION_SECONDS)
            if sha is not None and cache_entry is not None:
                pipe.set(content_key(sha, "cache"), cache_entry, ex=cache_ttl_seconds)
                pipe.expire(
                    generation_key(generation, "meta"),
                    max(cache_ttl_seconds, STREAM_RETENTION_SECONDS),
                )
            await self._call(pipe.execute)
        await self._release_claim(generation, sha)

    async def abandon(self, generation: str, sha: str | None) -> None:
        """Gives up a generation that will not finish: no lease, no claim, no final entry."""
        await self._call(lambda: self.redis.delete(generation_key(generation, "lease")))
        await self._release_claim(generation, sha)

    async def _release_claim(self, generation: str, sha: str | None) -> None:
        """Frees the content's claim, if this generation holds it (``sha`` None: it never did)."""
        if sha is not None:
            live = content_key(sha, "live")
            await self._call(lambda: self._release(keys=[live], args=[generation]))

    async def read(
        self, generation: str, after: bytes, block_milliseconds: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Stream entries after id ``after``; waits up to ``block_milliseconds`` (0: not)."""
        key = generation_key(generation, "events")
        client = self._blocking if block_milliseconds else self.redis
        reply: Any = await self._call(
            lambda: client.xread({key: after}, count=256, block=block_milliseconds or None)
        )
        return list(reply[0][1]) if reply else []

    async def alive(self, generation: str) -> bool:
        return bool(
            await self._call(lambda: self.redis.exists(generation_key(generation, "lease")))
        )

    async def watch(self, generation: str, watcher: str) -> None:
        key = generation_key(generation, "watchers")
        expires = time.time() + WATCH_SECONDS
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {watcher: expires})
            pipe.zremrangebyscore(key, "-inf", time.time())
            pipe.expire(key, STREAM_RETENTION_SECONDS)
            await self._call(pipe.execute)

    async def unwatch(self, generation: str, watcher: str) -> None:
        key = generation_key(generation, "watchers")
        await self._call(lambda: self.redis.zrem(key, watcher))

    async def request_stop(self, generation: str) -> None:
        await self._call(lambda: self.redis.publish(STOP_CHANNEL, generation))

    async def stop_requests(self) -> AsyncIterator[str]:
        """Ids published on the stop channel; reconnects after Redis trouble."""
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(STOP_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            yield message["data"].decode()
            except REDIS_FAULTS:
                await asyncio.sleep(RETRY_AFTER_SECONDS)

    async def pick_host(self, keys: list[str], ticket: str, lease_seconds: float) -> int:
        """Adds ``ticket`` to the least busy of the hosts' in-flight sets; returns its index."""
        args: list[str | float] = [time.time(), ticket, lease_seconds]
        return int(await self._call(lambda: self._pick_host(keys=keys, args=args)))

    async def drop_host_ticket(self, key: str, ticket: str) -> None:
        await self._call(lambda: self.redis.zrem(key, ticket))

    async def renew_host_tickets(self, tickets: dict[str, list[str]], lease_seconds: float) -> None:
        """Pushes back the expiry of this worker's tickets, per host key."""
        expires = time.time() + lease_seconds
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, members in tickets.items():
                pipe.zadd(key, dict.fromkeys(members, expires), xx=True)
                pipe.expire(key, math.ceil(lease_seconds))
            await self._call(pipe.execute)

    async def host_counts(self, keys: list[str]) -> list[int]:
        """Live tickets per host key."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zcount(key, f"({now}", "+inf")
            counts: list[Any] = await self._call(pipe.execute)
        return [int(count) for count in counts]


def batch_entry(first_index: int, payloads: Sequence[bytes]) -> dict[str, bytes]:
    """A stream entry of consecutive token payloads (one-line JSON each, so LF separates)."""
    return {"i": b"%d" % first_index, "p": b"\n".join(payloads)}
