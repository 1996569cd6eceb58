"""``Registry``: the generations of this worker, and how a request finds its feed: cache, join,
or lead.

``open`` answers a request from the cache, joins a generation of the same content already
running (here first, then on any worker through Redis), or leads a new one; one Redis round
trip decides; the request's ``Account`` goes to the generation it leads, else stays with the
request. ``locate`` says what a generation id names (here, or one read of its meta in
Redis), and ``follow`` opens the feed of a located generation for a resume or an events URL,
live or cached; ``find`` is both. ``stop`` ends one wherever it runs: other workers hear of it
on a pub/sub channel. When Redis is unavailable every request leads a private generation
(``BYPASS``): uncached, unjoined, but answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.errors import Cancelled, ServiceError, ShuttingDown
from app.generations import cache
from app.generations.answer import Answer
from app.generations.cache import LocalCopies
from app.generations.feeds import CachedFeed, Feed, LocalFeed, RemoteFeed, outcome
from app.generations.generation import (
    Account,
    Generation,
    Policy,
    TokenSource,
    new_generation_id,
)
from app.generations.leases import Leases
from app.generations.request import CompletionRequest, as_kind
from app.ops import tracing
from app.store import keys
from app.store.client import RedisUnavailable
from app.store.generations import Meta, RedisStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Located:
    """A generation that exists: ``local`` when it runs on this worker."""

    generation_id: str
    meta: Meta
    local: Generation | None = None


class Registry:
    def __init__(self, source: TokenSource, store: RedisStore, policy: Policy,
                 on_slots: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self._source = source
        self._on_slots = on_slots  # a host's slot was freed somewhere (app.upstream.fair_queue)
        self._store = store
        self._policy = policy
        self._by_id: dict[str, Generation] = {}
        self._by_sha: dict[str, Generation] = {}
        self._claiming: dict[str, asyncio.Event] = {}  # content claims this worker awaits now
        self._tasks: set[asyncio.Task[None]] = set()
        self._copies: LocalCopies[CachedFeed] = LocalCopies(max_seconds=policy.local_cache_seconds)
        self._leases = Leases(store)
        self.draining = False  # set by the drain: no new generations, no new followers
        self.halted: ServiceError | None = None  # set at the drain's end: followers stop

    def refuse_new(self) -> None:
        self.draining = True

    def halt(self) -> None:
        """Ends every generation here and every follower of one elsewhere: the worker exits."""
        self.halted = ShuttingDown("This server is restarting; reconnect to continue.")
        for generation in list(self._by_id.values()):
            generation.cancel(self.halted)

    def _refuse_while_draining(self) -> None:
        if self.draining:
            raise ShuttingDown("This server is shutting down; try again.")

    async def open(self, request: CompletionRequest, account: Account | None = None) -> Feed:
        """The request's feed; ``account`` is what it owes its client's quotas: a generation it
        leads takes it (and settles it when it ends); else it stays its owner's to give back."""
        self._refuse_while_draining()
        sha = cache.content_hash(request)
        if not request.cache:
            return await self._lead(request, sha, new_generation_id(), account, claimed=False)
        # identical requests here wait for the first one's claim, then find what it found: its
        # generation or its hit, here, instead of each following it through Redis (a burst of
        # identical requests on one worker costs one claim, not one round trip each)
        while (claiming := self._claiming.get(sha)) is not None:
            await claiming.wait()
        copy = self._copies.get(sha)
        if copy is not None:
            return copy
        local = self._by_sha.get(sha)
        if local is not None and not local.ended:
            return LocalFeed(local, "JOINED")
        claiming = self._claiming[sha] = asyncio.Event()
        try:
            return await self._claim(request, sha, account)
        finally:
            del self._claiming[sha]
            claiming.set()

    async def _claim(self, request: CompletionRequest, sha: str, account: Account | None
                     ) -> Feed:  # fmt: skip
        """One Redis round trip decides: a cache hit, lead a new generation, or join one."""
        generation_id = new_generation_id()
        read_cache = self._policy.cache_ttl_seconds > 0
        try:
            claim = await self._store.claim(sha, generation_id, read_cache=read_cache)
        except RedisUnavailable:
            return self._start(request, sha, generation_id, account, claimed=False, store=None)
        if claim.outcome == "hit":
            try:
                hit = CachedFeed(cache.decode(claim.value))
                self._copies.put(sha, hit, size=hit.held_bytes, ttl_seconds=claim.ttl_seconds)
                return hit
            except ValueError:  # generate afresh: its entry overwrites the bad one
                logger.warning("replacing a corrupt cache entry for %s", sha)
                return await self._lead(request, sha, generation_id, account, claimed=True)
        if claim.outcome == "lead":
            return await self._lead(request, sha, generation_id, account, claimed=True)
        joined = claim.value.decode()
        trace = ""
        if tracing.tracer() is not None:  # what to link to: one read more, while traced
            with contextlib.suppress(RedisUnavailable):
                meta = await self._store.meta(joined)
                trace = "" if meta is None else meta.trace
        feed = RemoteFeed(self._store, joined, request.kind, request.model, "JOINED", self, trace)
        with contextlib.suppress(RedisUnavailable):
            await feed.watch()
        return feed

    async def locate(self, generation_id: str) -> Located | None:
        """What ``generation_id`` names, here or anywhere; ``None`` when nothing (any longer).
        Raises ``ShuttingDown`` while draining: nothing new follows a generation then."""
        self._refuse_while_draining()
        local = self._by_id.get(generation_id)
        if local is not None:
            return Located(generation_id, local.meta, local)
        try:
            meta = await self._store.meta(generation_id)
        except RedisUnavailable:
            return None
        return None if meta is None else Located(generation_id, meta)

    async def follow(self, located: Located) -> Feed | None:
        """A feed of the located generation from its start: live, or a replay of its end."""
        if located.local is not None:
            return LocalFeed(located.local, "JOINED")
        generation_id, meta = located.generation_id, located.meta
        kind = as_kind(meta.kind)
        feed = RemoteFeed(self._store, generation_id, kind, meta.model, "JOINED", self, meta.trace)
        try:
            await feed.pull(0)
            if not feed.ended and await self._store.alive(generation_id):
                return feed  # running
            entry = await self._store.cached(meta.sha)
        except RedisUnavailable:
            return None
        with contextlib.suppress(ValueError):  # a corrupt entry is no entry
            completion = cache.decode(entry) if entry is not None else None
            if completion is not None and completion.generation == generation_id:
                return CachedFeed(completion)  # over: a replay from the cache, fast
        return feed if feed.ended else None  # over but not cached (failed, cache off), or gone

    async def find(self, generation_id: str) -> Feed | None:
        """The feed of generation ``generation_id``, if it exists."""
        located = await self.locate(generation_id)
        return None if located is None else await self.follow(located)

    def keep(self, feed: Feed, then: Callable[[Answer | ServiceError], Awaitable[None]]) -> None:
        """Follows ``feed`` on this worker until its generation ends, so that it runs with no
        client at all (a background request), then gives ``then`` its answer or the error that
        ended it, and closes the feed. Cancelled with the worker."""

        async def follow() -> None:
            try:
                await then(await outcome(feed))
            finally:
                await feed.aclose()

        task = asyncio.create_task(follow(), name=f"{feed.generation_id} kept")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, generation_id: str) -> bool:
        """Stops the generation for every client; ``False`` when there is no such generation."""
        local = self._by_id.get(generation_id)
        if local is not None:
            local.cancel(Cancelled("Stopped by a client."))
            return True
        try:
            if await self._store.meta(generation_id) is None:
                return False
            await self._store.request_stop(generation_id)
        except RedisUnavailable:
            return False
        return True

    async def listen(self) -> None:
        """Runs for the worker's life: stops local generations that a client asked to stop,
        tells those that a client elsewhere began to follow, and passes on freed slots."""
        async for channel, generation_id in self._store.notices():
            if channel == keys.SLOTS_CHANNEL:
                self._on_slots()
                continue
            local = self._by_id.get(generation_id)
            if local is None:
                continue
            if channel == keys.STOP_CHANNEL:
                local.cancel(Cancelled("Stopped by a client."))
            else:
                local.watched()

    async def _lead(
        self, request: CompletionRequest, sha: str, generation_id: str, account: Account | None,
        *, claimed: bool,
    ) -> Feed:  # fmt: skip
        feed = self._start(request, sha, generation_id, account, claimed=claimed,
                           store=self._store)  # fmt: skip
        # announced now, so its id works at once (an events URL, a stop); if Redis fails here,
        # the generation's keeper announces it on its next tick
        with contextlib.suppress(RedisUnavailable):
            await self._by_id[generation_id].announce()
        return feed

    def _start(
        self,
        request: CompletionRequest,
        sha: str,
        generation_id: str,
        account: Account | None,
        *,
        claimed: bool,
        store: RedisStore | None,
    ) -> Feed:
        """Runs a new generation here; only a claimed one (joinable, cacheable) is a MISS."""
        generation = Generation(
            request, generation_id=generation_id, sha=sha, claimed=claimed, store=store,
            policy=self._policy, leases=self._leases, account=account,
        )  # fmt: skip
        self._by_id[generation_id] = generation
        if claimed:
            self._by_sha[sha] = generation
        feed = LocalFeed(generation, "MISS" if claimed else "BYPASS")
        producer, keeper = generation.start(self._source)
        for task in (producer, keeper):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        keeper.add_done_callback(lambda _: self._forget(generation))
        return feed

    def _forget(self, generation: Generation) -> None:
        if generation.cached is not None:
            ttl = self._policy.cache_ttl_seconds
            feed = CachedFeed(generation.cached)
            self._copies.put(generation.sha, feed, size=feed.held_bytes, ttl_seconds=ttl)
        self._by_id.pop(generation.id, None)
        if self._by_sha.get(generation.sha) is generation:
            del self._by_sha[generation.sha]

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._leases.aclose()
