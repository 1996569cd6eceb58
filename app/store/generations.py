"""Every Redis operation of the service's generations and hosts, and its scripts.

The keys are built by ``app.store.keys`` (its docstring has the layout) and the generation's stream
entries by ``app.store.entries``. Every call goes through one ``Guarded``: a failure is
``RedisUnavailable``, and for a second after one the store refuses calls without touching the
network, so an outage costs requests nothing but a bypassed cache. What every stream writes
often (its batches, renewals and watches) and what every request does (its claim, its host,
its end) share one pipeline per turn of the event loop (``app.store.pipeline``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from app.generations.request import Kind
from app.store import keys
from app.store.client import REDIS_FAULTS, RETRY_AFTER_SECONDS, Guarded, RedisClient
from app.store.pipeline import SharedPipeline

GENERATION_LEASE_SECONDS = 5.0
WATCH_SECONDS = 3.0  # a remote client's presence lasts this long unless renewed
STREAM_RETENTION_SECONDS = 600  # a finished generation's events stay resumable this long

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


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: Literal["hit", "lead", "join"]
    value: bytes  # the cache entry for a hit, else the generation id
    ttl_seconds: float = 0.0  # how long a hit's entry has left


@dataclass(frozen=True, slots=True)
class Meta:
    """What a generation is, kept under its id (``bib:{<g>}:meta``) so any worker can find it."""

    sha: str
    kind: Kind
    model: str


@dataclass(frozen=True, slots=True)
class Renewal:
    """What one generation's renewal writes (``RedisStore.renew``)."""

    generation: str
    meta: Meta
    meta_ttl: int
    claimed: bool
    describe: bool  # the meta and the events' expiry too
    count: bool  # the clients on other workers
    concurrency_ticket: tuple[str, str] | None = None  # the leader's: its running set, its name


class RedisStore:
    """Args:
    redis: the client for quick commands, with a short socket timeout.
    blocking: the client for blocking stream reads, whose socket timeout outlasts the block.
    gate: bounds the quick commands in flight at once (shared with the limiter).
    """

    def __init__(
        self, redis: RedisClient, blocking: RedisClient, gate: asyncio.Semaphore | None = None
    ) -> None:
        self.redis = redis
        self._blocking = blocking
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._pick_host = redis.register_script(_PICK_HOST)
        self._call = Guarded("generations", "serving without cache and joining", gate=gate)
        self._shared = SharedPipeline(redis, self._call)  # the commands of every stream

    async def claim(self, sha: str, generation: str, *, read_cache: bool) -> Claim:
        names = [keys.content(sha, "cache"), keys.content(sha, "live")]
        args: list[str | int] = [generation, int(GENERATION_LEASE_SECONDS * 1000), int(read_cache)]
        outcome, value, *ttl = await self._shared.script(self._claim, names, args)
        return Claim(outcome.decode(), value, ttl[0] / 1000 if ttl else 0.0)

    async def cached(self, sha: str) -> bytes | None:
        return await self._get(keys.content(sha, "cache"))

    async def embedding(self, sha: str) -> bytes | None:
        return await self._get(keys.content(sha, "embedding"))

    async def save_embedding(self, sha: str, entry: bytes, ttl_seconds: int) -> None:
        key = keys.content(sha, "embedding")
        await self._call(lambda: self.redis.set(key, entry, ex=ttl_seconds))

    async def meta(self, generation: str) -> Meta | None:
        found = await self._get(keys.generation(generation, "meta"))
        if found is None:
            return None
        fields = orjson.loads(found)
        return Meta(fields["sha"], fields["kind"], fields["model"])

    async def _get(self, key: str) -> bytes | None:
        # the client is built without decode_responses, so values are bytes
        return cast(bytes | None, await self._call(lambda: self.redis.get(key)))

    async def append(self, generation: str, entry: dict[str, bytes], *, first: bool) -> None:
        """Adds one entry to the generation's events (the first one also sets their TTL)."""
        key = keys.generation(generation, "events")

        def queue(pipe: Any) -> None:
            pipe.xadd(key, entry)
            if first:
                pipe.expire(key, STREAM_RETENTION_SECONDS)

        await self._shared.run(queue)

    async def renew(self, renewals: Sequence[Renewal]) -> list[int]:
        """Renews each leader's lease, its claim on the content if ``claimed`` and its
        concurrency ticket if it has one; with ``describe`` also writes the generation's meta
        and pushes back its events' expiry (both last far longer than a lease). All in one
        round trip; returns, for each, how many clients follow on other workers if it asked to
        ``count``, else 0."""

        counted: list[int | None] = []  # where each one's count is among the replies

        def queue(pipe: Any) -> None:
            start, lease_ms = len(pipe), int(GENERATION_LEASE_SECONDS * 1000)
            for r in renewals:
                pipe.set(keys.generation(r.generation, "lease"), 1, px=lease_ms)
                if r.claimed:
                    pipe.pexpire(keys.content(r.meta.sha, "live"), lease_ms)
                if r.describe:
                    described = {"sha": r.meta.sha, "kind": r.meta.kind, "model": r.meta.model}
                    pipe.set(keys.generation(r.generation, "meta"), orjson.dumps(described),
                             ex=r.meta_ttl)  # fmt: skip
                    pipe.expire(keys.generation(r.generation, "events"), STREAM_RETENTION_SECONDS)
                if r.concurrency_ticket is not None:  # xx: a ticket given back stays given back
                    running, ticket = r.concurrency_ticket
                    expires = time.time() + GENERATION_LEASE_SECONDS
                    pipe.zadd(running, {ticket: expires}, xx=True)
                    pipe.expire(running, math.ceil(GENERATION_LEASE_SECONDS))
                if r.count:
                    pipe.zcount(keys.generation(r.generation, "watchers"), time.time(), "+inf")
                counted.append(len(pipe) - 1 - start if r.count else None)

        replies = await self._shared.run(queue)
        return [0 if at is None else int(replies[at]) for at in counted]

    async def finish(
        self,
        generation: str,
        sha: str | None,
        terminal: dict[str, bytes],
        cache_entry: bytes | None,
        cache_ttl_seconds: int,
    ) -> None:
        """Ends the events with ``terminal``, caches a finished completion, frees the claim."""
        events = keys.generation(generation, "events")

        def queue(pipe: Any) -> None:
            pipe.xadd(events, terminal)
            pipe.expire(events, STREAM_RETENTION_SECONDS)
            if sha is not None and cache_entry is not None:
                pipe.set(keys.content(sha, "cache"), cache_entry, ex=cache_ttl_seconds)
                pipe.expire(
                    keys.generation(generation, "meta"),
                    max(cache_ttl_seconds, STREAM_RETENTION_SECONDS),
                )

        await self._shared.run(queue)
        await self._release_claim(generation, sha)  # after: the cache entry is there first

    async def abandon(self, generation: str, sha: str | None) -> None:
        """Gives up a generation that will not finish: no lease, no claim, no final entry."""
        await self._call(lambda: self.redis.delete(keys.generation(generation, "lease")))
        await self._release_claim(generation, sha)

    async def _release_claim(self, generation: str, sha: str | None) -> None:
        """Frees the content's claim, if this generation holds it (``sha`` None: it never did)."""
        if sha is not None:
            live = keys.content(sha, "live")
            await self._shared.script(self._release, [live], [generation])

    async def read(
        self, generation: str, after: bytes, block_milliseconds: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Stream entries after id ``after``; waits up to ``block_milliseconds`` (0: not)."""
        key = keys.generation(generation, "events")
        client = self._blocking if block_milliseconds else self.redis
        reply: Any = await self._call(
            lambda: client.xread({key: after}, count=256, block=block_milliseconds or None),
            gated=not block_milliseconds,  # a read that waits must not keep commands waiting
        )
        return list(reply[0][1]) if reply else []

    async def alive(self, generation: str) -> bool:
        return bool(
            await self._call(lambda: self.redis.exists(keys.generation(generation, "lease")))
        )

    async def watch(self, generation: str, watcher: str, *, first: bool = False) -> None:
        """Marks ``watcher`` present for ``WATCH_SECONDS``; the ``first`` time, also tells the
        leader's worker on the watch channel, so its batches go out promptly at once."""
        key = keys.generation(generation, "watchers")
        expires = time.time() + WATCH_SECONDS

        def queue(pipe: Any) -> None:
            pipe.zadd(key, {watcher: expires})
            pipe.zremrangebyscore(key, "-inf", time.time())
            pipe.expire(key, STREAM_RETENTION_SECONDS)

        await self._shared.run(queue)
        if first:  # apart: a cluster pipeline has no slot for a channel
            await self._call(lambda: self.redis.publish(keys.WATCH_CHANNEL, generation))

    async def unwatch(self, generation: str, watcher: str) -> None:
        key = keys.generation(generation, "watchers")
        await self._call(lambda: self.redis.zrem(key, watcher))

    async def request_stop(self, generation: str) -> None:
        await self._call(lambda: self.redis.publish(keys.STOP_CHANNEL, generation))

    async def notices(self) -> AsyncIterator[tuple[str, str]]:
        """``(channel, generation id)`` as published on the stop and watch channels, and
        ``(slots channel, "")`` for a freed slot; reconnects after Redis trouble."""
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(keys.STOP_CHANNEL, keys.WATCH_CHANNEL,
                                           keys.SLOTS_CHANNEL)  # fmt: skip
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            yield message["channel"].decode(), message["data"].decode()
            except REDIS_FAULTS:
                await asyncio.sleep(RETRY_AFTER_SECONDS)

    async def pick_host(self, urls: list[str], ticket: str, lease_seconds: float) -> int:
        """Adds ``ticket`` to the least busy of the hosts' in-flight sets; returns its index."""
        names = [keys.host_in_flight(url) for url in urls]
        args: list[str | float] = [time.time(), ticket, lease_seconds]
        return int(await self._shared.script(self._pick_host, names, args))

    async def drop_host_ticket(self, url: str, ticket: str, *, announce: bool = False) -> None:
        """Frees the host's slot of ``ticket``; ``announce``: tells the queue's waiters (a
        command of its own: a cluster pipeline cannot route one without a key)."""
        await self._shared.run(lambda pipe: pipe.zrem(keys.host_in_flight(url), ticket))
        if announce:
            await self._call(lambda: self.redis.publish(keys.SLOTS_CHANNEL, ""))

    async def renew_host_tickets(self, tickets: dict[str, list[str]], lease_seconds: float) -> None:
        """Pushes back the expiry of this worker's tickets, per host URL."""
        expires = time.time() + lease_seconds
        async with self.redis.pipeline(transaction=False) as pipe:
            for url, members in tickets.items():
                pipe.zadd(keys.host_in_flight(url), dict.fromkeys(members, expires), xx=True)
                pipe.expire(keys.host_in_flight(url), math.ceil(lease_seconds))
            await self._call(pipe.execute)

    async def host_counts(self, urls: list[str]) -> list[int]:
        """Live tickets per host URL."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for url in urls:
                pipe.zcount(keys.host_in_flight(url), f"({now}", "+inf")
            counts: list[Any] = await self._call(pipe.execute)
        return [int(count) for count in counts]
