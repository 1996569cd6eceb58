"""Every Redis operation of the service's generations and hosts; their scripts are the ``.lua``
files beside it (``claim.lua``, ``release.lua``, and ``least_taken.lua`` of ``app.store.tickets``).

The keys are built by ``app.store.keys`` (its docstring has the layout), the generation's stream
entries by ``app.store.entries``, and the tickets of hosts, clients and watchers by
``app.store.tickets``. Every call goes through one ``Guarded``: a failure is
``RedisUnavailable``, and for a second after one the store refuses calls without touching the
network, so an outage costs requests nothing but a bypassed cache. What every stream writes
often (its batches, renewals and watches) and what every request does (its claim, its host,
its end) share one pipeline per turn of the event loop (``app.store.pipeline``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from app.store import keys, tickets
from app.store.client import (
    REDIS_FAULTS,
    RETRY_AFTER_SECONDS,
    Guarded,
    RedisClient,
    register_script,
)
from app.store.pipeline import SharedPipeline

GENERATION_LEASE_SECONDS = 5.0
WATCH_SECONDS = 3.0  # a remote client's presence lasts this long unless renewed
STREAM_RETENTION_SECONDS = 600  # a finished generation's events stay resumable this long


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: Literal["hit", "lead", "join"]
    value: bytes  # the cache entry for a hit, else the generation id
    ttl_seconds: float = 0.0  # how long a hit's entry has left


@dataclass(frozen=True, slots=True)
class Meta:
    """What a generation is, kept under its id (``bib:{<g>}:meta``) so any worker can find it."""

    sha: str
    kind: str  # the request's kind: generate or chat
    model: str
    trace: str = ""  # the traceparent of its span while traced (app.ops.tracing), for links


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
    gate: bounds the quick commands in flight at once (shared with the quotas').
    """

    def __init__(
        self, redis: RedisClient, blocking: RedisClient, gate: asyncio.Semaphore | None = None
    ) -> None:
        self.redis = redis
        self._blocking = blocking
        self._claim = register_script(redis, __package__, "claim.lua")
        self._release = register_script(redis, __package__, "release.lua")
        self._least_taken = tickets.least_taken(redis)
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
        return Meta(fields["sha"], fields["kind"], fields["model"], fields.get("trace", ""))

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
                    if r.meta.trace:
                        described["trace"] = r.meta.trace
                    pipe.set(keys.generation(r.generation, "meta"), orjson.dumps(described),
                             ex=r.meta_ttl)  # fmt: skip
                    pipe.expire(keys.generation(r.generation, "events"), STREAM_RETENTION_SECONDS)
                if r.concurrency_ticket is not None:
                    running, ticket = r.concurrency_ticket
                    tickets.add(pipe, running, [ticket], GENERATION_LEASE_SECONDS, renew=True)
                if r.count:
                    tickets.count(pipe, keys.generation(r.generation, "watchers"))
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

        def queue(pipe: Any) -> None:
            tickets.prune(pipe, key)
            tickets.add(pipe, key, [watcher], WATCH_SECONDS)

        await self._shared.run(queue)
        if first:  # apart: a cluster pipeline has no slot for a channel
            await self._call(lambda: self.redis.publish(keys.WATCH_CHANNEL, generation))

    async def unwatch(self, generation: str, watcher: str) -> None:
        key = keys.generation(generation, "watchers")
        await self._shared.run(lambda pipe: tickets.drop(pipe, key, [watcher]))

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

    async def pick_host(self, urls: list[str], ticket: str, lease_seconds: float,
                        waiting: Sequence[int] = (), preferred: int | None = None,
                        spill: int = 0) -> int:  # fmt: skip
        """Adds ``ticket`` to the least busy of the hosts' in-flight sets, each counted with
        what its engine has ``waiting`` besides, or to the ``preferred`` one's unless that
        counts more than ``spill`` above the least; returns its index."""
        names = [keys.host_in_flight(url) for url in urls]
        first = 0 if preferred is None else preferred + 1
        args: list[str | float] = [time.time(), ticket, lease_seconds, first, spill, *waiting]
        return int(await self._shared.script(self._least_taken, names, args))

    async def drop_host_ticket(self, url: str, ticket: str, *, announce: bool = False) -> None:
        """Frees the host's slot of ``ticket``; ``announce``: tells the queue's waiters (a
        command of its own: a cluster pipeline cannot route one without a key)."""
        await self._shared.run(lambda pipe: tickets.drop(pipe, keys.host_in_flight(url), [ticket]))
        if announce:
            await self._call(lambda: self.redis.publish(keys.SLOTS_CHANNEL, ""))

    async def renew_host_tickets(self, held: dict[str, list[str]], lease_seconds: float) -> None:
        """Pushes back the lapse of this worker's tickets, per host URL."""

        def queue(pipe: Any) -> None:
            for url, members in held.items():
                tickets.add(pipe, keys.host_in_flight(url), members, lease_seconds, renew=True)

        await self._shared.run(queue)

    async def host_counts(self, urls: list[str]) -> list[int]:
        """Live tickets per host URL."""

        def queue(pipe: Any) -> None:
            for url in urls:
                tickets.count(pipe, keys.host_in_flight(url))

        return [int(count) for count in await self._shared.run(queue)]
