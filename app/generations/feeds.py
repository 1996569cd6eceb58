"""Feeds: what one client follows, wherever the generation is.

``LocalFeed`` follows a generation running on this worker (no Redis on the path), ``RemoteFeed`` one
running on another worker or replica, through its Redis stream, and ``CachedFeed`` a finished
completion from the cache. All three give the same bytes for the same token, so a client cannot tell
where its answer came from, except by ``X-Cache`` and ``cached``. A remote generation whose leader
stops renewing its lease (its worker died) ends with an ``upstream_error`` event within about
``GENERATION_LEASE_SECONDS`` plus a second. Whoever opens a feed closes it (``aclose``), once it no
longer reads: the routes do, in one place.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from collections.abc import AsyncGenerator
from typing import Any, Literal, Protocol

import anyio

from app.errors import ServiceError, UpstreamError
from app.generations.answer import Answer, gather
from app.generations.cache import CachedCompletion
from app.generations.generation import Generation, GenerationView
from app.generations.request import Kind
from app.generations.wire import Chunk, Wire
from app.store import entries
from app.store.client import RedisUnavailable
from app.store.generations import RedisStore

XCache = Literal["HIT", "MISS", "JOINED", "BYPASS"]
# replays a worker's copy of a cached completion keeps: native, OpenAI with and without its
# usage chunk, Ollama (a completion is chat or generate, so that is each surface's)
KEPT_REPLAYS = 4
# the most any surface's wire adds to one token, beside the model's name (each surface's wire is
# tested against it): what a worker's copy is counted to hold for each token it may replay
MAX_FRAMING_BYTES = 256
MAX_ENDS_BYTES = 4096  # and what it adds to start and end a stream, beside the model's name
READ_BLOCK_MILLISECONDS = 1000
RENEW_WATCH_SECONDS = 1.0


class Feed(Protocol):
    generation_id: str
    model: str
    x_cache: XCache
    trace: str  # the traceparent of its generation's span ("" when not traced), to link to

    async def ready(self, timeout_seconds: float) -> bool:
        """Waits until there is something to send; ``False`` when the time ran out first."""

    @property
    def ended(self) -> bool:
        """Whether the generation has ended (done or failed), as far as this feed knows."""

    @property
    def host(self) -> str | None:
        """The host its generation runs on, when this worker placed it."""

    def early_error(self) -> ServiceError | None:
        """The error that ended the generation before its first token, if any."""

    def chunks(self, index: int, wire: Wire) -> AsyncGenerator[Chunk]:
        """Token events from ``index`` on, then ``done`` or ``error``, in ``wire``."""

    async def answer(self) -> Answer:
        """The whole answer, once the generation has finished; raises the error that ended it."""

    async def aclose(self) -> None:
        """This client is gone (idempotent)."""


class LocalFeed:
    def __init__(self, generation: Generation, x_cache: XCache) -> None:
        self.generation_id = generation.id
        self.model = generation.request.model
        self.x_cache = x_cache
        self.trace = generation.trace
        self._generation: GenerationView = generation
        self._detach = generation.attach()

    @property
    def ended(self) -> bool:
        return self._generation.ended

    @property
    def host(self) -> str | None:
        return self._generation.host

    async def ready(self, timeout_seconds: float) -> bool:
        with anyio.move_on_after(timeout_seconds) as waiting:
            await self._generation.wait_beyond(0)
        return not waiting.cancelled_caught

    def early_error(self) -> ServiceError | None:
        return None if self._generation.payloads else self._generation.error

    def chunks(self, index: int, wire: Wire) -> AsyncGenerator[Chunk]:
        return self._generation.follow(index, wire)

    async def answer(self) -> Answer:
        generation = self._generation
        while not generation.ended:
            await generation.wait_beyond(len(generation.payloads), generation.queued)
        await generation.wait_settled()
        if generation.error is not None:
            raise generation.error
        assert generation.stats is not None
        request = generation.request
        return gather(request.kind, request.model, generation.payloads, generation.stats,
                      cached=False)  # fmt: skip

    async def aclose(self) -> None:
        self._detach()


async def outcome(feed: Feed) -> Answer | ServiceError:
    """The generation's answer, or the error that ended it, once it has ended."""
    try:
        return await feed.answer()
    except ServiceError as exc:
        return exc


class CachedFeed:
    def __init__(self, completion: CachedCompletion) -> None:
        self.generation_id = completion.generation
        self.model = completion.model
        self.x_cache: XCache = "HIT"
        self.trace = completion.trace
        self.host: str | None = None  # which host generated it is not kept
        self._completion = completion
        # built once per wire: copies of hot entries serve many hits, through any surface
        self._replays: dict[tuple[str, ...], Chunk] = {}
        self.ended = True

    @property
    def held_bytes(self) -> int:
        """About what this feed holds in memory, as a worker's copy: the payloads as Python
        objects, and the whole replays that hits build, up to ``KEPT_REPLAYS`` of at most
        ``_replay_allowance`` each (counted from the start, so a copy's cost does not grow
        later)."""
        payloads = self._completion.payloads
        objects = sys.getsizeof(payloads) + sum(map(sys.getsizeof, payloads))
        return objects + KEPT_REPLAYS * self._replay_allowance

    @property
    def _replay_allowance(self) -> int:
        """The most a kept replay may hold: the payloads again, each with the largest framing
        of any surface, and the stream's start and end; a larger one (a Responses stream that
        echoes a long tool list, say) is built anew for each hit instead of kept."""
        payloads = self._completion.payloads
        framing = MAX_FRAMING_BYTES + len(self.model)
        return sum(map(len, payloads)) + framing * len(payloads) + MAX_ENDS_BYTES

    async def ready(self, timeout_seconds: float) -> bool:
        return True

    def early_error(self) -> ServiceError | None:
        return None

    def replay(self, index: int, wire: Wire) -> Chunk:
        """Everything from token ``index`` on, at once: a replay is as fast as the client reads.
        Replays from the start are kept, one per ``wire.replay_key``, up to ``KEPT_REPLAYS``."""
        whole = index == 0 and (wire.replay_key in self._replays
                                or len(self._replays) < KEPT_REPLAYS)  # fmt: skip
        if whole and wire.replay_key in self._replays:
            return self._replays[wire.replay_key]
        completion = self._completion
        replayed = Chunk(
            wire.tokens(completion.generation, index, completion.payloads[index:])
            + wire.done(completion.generation, completion.stats, cached=True),
            max(0, len(completion.payloads) - index),
        )
        if whole and len(replayed.data) <= self._replay_allowance:
            self._replays[wire.replay_key] = replayed
        return replayed

    async def chunks(self, index: int, wire: Wire) -> AsyncGenerator[Chunk]:
        yield self.replay(index, wire)

    async def answer(self) -> Answer:
        c = self._completion
        return gather(c.kind, c.model, c.payloads, c.stats, cached=True)

    async def aclose(self) -> None:
        pass


class Halting(Protocol):
    halted: ServiceError | None  # set when this worker stops: its followers end with it


class RemoteFeed:
    """Follows a generation of another worker through its Redis stream."""

    def __init__(
        self,
        store: RedisStore,
        generation_id: str,
        kind: Kind,
        model: str,
        x_cache: XCache,
        worker: Halting,
        trace: str = "",
    ) -> None:
        self.generation_id = generation_id
        self.model = model
        self.x_cache = x_cache
        self.trace = trace
        self.host: str | None = None  # placed by another worker
        self._store = store
        self._kind = kind
        self._worker = worker
        self._watcher = secrets.token_hex(8)
        self._watched_at = 0.0
        self._last_entry = b"0"
        self.payloads: list[bytes] = []
        self._stats: dict[str, Any] | None = None
        self._error: ServiceError | None = None

    @property
    def ended(self) -> bool:
        return self._stats is not None or self._error is not None

    async def watch(self) -> None:
        """Tells the leader that a client follows here, at most once a second."""
        if time.monotonic() - self._watched_at >= RENEW_WATCH_SECONDS:
            first = not self._watched_at
            self._watched_at = time.monotonic()
            await self._store.watch(self.generation_id, self._watcher, first=first)

    async def pull(self, block_milliseconds: int) -> None:
        """Reads new stream entries; after waiting in vain, notices a leader that is gone."""
        try:
            await self.watch()
            found = await self._store.read(self.generation_id, self._last_entry, block_milliseconds)
            if not found and block_milliseconds and not await self._store.alive(self.generation_id):
                found = await self._store.read(self.generation_id, self._last_entry, 0)
                if not found:
                    self._error = UpstreamError("The worker running this generation went away.")
        except RedisUnavailable:
            self._error = UpstreamError("Lost touch with the generation.")
            return
        for entry_id, fields in found:
            self._last_entry = entry_id
            entry = entries.decode(fields)
            if isinstance(entry, entries.Batch):
                if entry.first_index != len(self.payloads):  # Redis lost earlier entries
                    self._error = UpstreamError("Part of the generation was lost; ask again.")
                    return
                self.payloads.extend(entry.payloads)
            elif isinstance(entry, entries.Done):
                self._stats = entry.stats
            else:
                self._error = entry.error

    async def ready(self, timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while not self.payloads and not self.ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self.pull(min(int(remaining * 1000) + 1, READ_BLOCK_MILLISECONDS))
        return True

    def early_error(self) -> ServiceError | None:
        return None if self.payloads else self._error

    async def chunks(self, index: int, wire: Wire) -> AsyncGenerator[Chunk]:
        while True:
            if len(self.payloads) > index:
                available = len(self.payloads)
                data = wire.tokens(self.generation_id, index, self.payloads[index:available])
                yield Chunk(data, available - index)
                index = available
            elif self._stats is not None:
                yield Chunk(wire.done(self.generation_id, self._stats, cached=False), 0)
                return
            elif self._error is not None:
                yield Chunk(wire.error(self.generation_id, self._error), 0)
                return
            elif self._worker.halted is not None:
                yield Chunk(wire.error(self.generation_id, self._worker.halted), 0)
                return
            else:
                await self.pull(READ_BLOCK_MILLISECONDS)

    async def answer(self) -> Answer:
        while not self.ended:
            await self.pull(READ_BLOCK_MILLISECONDS)
        if self._error is not None:
            raise self._error
        assert self._stats is not None
        return gather(self._kind, self.model, self.payloads, self._stats, cached=False)

    async def aclose(self) -> None:
        # shielded: this runs when the client hung up and our task is being cancelled
        with anyio.move_on_after(1, shield=True), contextlib.suppress(RedisUnavailable):
            await self._store.unwatch(self.generation_id, self._watcher)  # else it expires
