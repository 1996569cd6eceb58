"""``Generation``: one upstream generation run as a task, followed by clients here and elsewhere,
and its seams: the ``TokenSource`` it runs, the ``Token`` and ``Finished`` chunks the source
emits, the ``Policy`` it follows, and ``GenerationView``, all that a follower may read of it.

A ``Generation`` runs a ``TokenSource`` in a task of its own and keeps what it produced (each
token's JSON payload, then the engine's statistics or the error that ended it), so clients on this
worker follow it from any token index and the task talking to the engine never waits on a client.

A second task, the keeper, has two states. While the generation runs it publishes
(``_publish_while_running``): the tokens go to Redis in batches, one stream entry (``XADD``)
each, for clients on other workers, for resuming and for the cache; a joiner elsewhere sees a
token about 50 ms (plus a round trip) after one here, and while nobody elsewhere follows a
batch goes out once a tick. Keepers write at the worker's common batch times, so those woken
together share one round trip (``app.store.pipeline``). The leases are renewed by the worker's one
loop (``app.generations.leases``), which also counts the clients on other workers: when none has
been here or elsewhere for ``RESUME_GRACE``, the upstream request is cancelled. Once the generation
has ended the keeper writes the end (``_write_end``): the last tokens, then ``done`` and the cache
entry, or the error. Its clients get the final event only once the end is written, so a client
that saw ``done`` and asks again gets a cache hit, and one that saw an error asks the engine again;
while Redis is down after the end, they get it at once and the keeper goes on writing it while
the claim lasts. A generation is cached only when the engine said ``done``; a failed or cancelled
one never is.

While its source waits for a GPU slot (``app.upstream.fair_queue``), it emits ``Queued`` positions,
which followers here get as ``queued`` events (on the wires that have them), and a generation whose
clients have all left leaves the queue at once instead of after ``RESUME_GRACE``. Its leader's
``Account`` is settled once it has ended: its tokens charged, its concurrency ticket given back,
and for a key the engine's counts recorded as its use (``app.store.usage``), even if its client
has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from app.errors import Cancelled, QueueTimeout, RateLimited, ServiceError, ShuttingDown
from app.generations import cache
from app.generations.leases import BATCH_SECONDS, Leases, batch_time
from app.generations.request import CompletionRequest
from app.generations.wire import Chunk, Wire, token_fields, token_payload
from app.ops import metrics, tracing
from app.ops.genai import Operation
from app.settings import Settings
from app.store import entries
from app.store.client import RedisUnavailable
from app.store.generations import (
    GENERATION_LEASE_SECONDS,
    STREAM_RETENTION_SECONDS,
    Meta,
    RedisStore,
    Renewal,
)
from app.store.usage import Counts, Usage
from app.upstream.engine import Emit, Finished, Placed, Queued, Token

logger = logging.getLogger(__name__)

KEEPER_TICK_SECONDS = 1.0
LEASE_RENEW_SECONDS = 2.0  # well inside the 5 s lease
DESCRIBE_SECONDS = 60.0  # the meta and the events' expiry, which last ten minutes and more


class TokenSource(Protocol):
    async def generate(self, request: CompletionRequest, emit: Emit, *, client: str) -> None:
        """Emits the request's tokens, then one ``Finished``, perhaps after ``Queued`` ones
        while it waits for a slot, in line as ``client``; raises ``ServiceError``."""


class Account(Protocol):
    """What an admitted request owes its client's quotas (``app.access.quotas``), as the
    generation it leads keeps it: its concurrency ticket, renewed with the generation's lease,
    and the tokens the generation used, charged when it ends."""

    @property
    def client(self) -> str:
        """Whom it is counted for: the generation waits in the GPU queue as this client."""

    @property
    def lease(self) -> tuple[str, str] | None:
        """The running set and the concurrency ticket to renew (``None``: none is held)."""

    @property
    def usage(self) -> Usage | None:
        """Where the engine's counts are recorded as the client's key's use (``None``: not
        recorded, a client without a key)."""

    def take(self) -> None:
        """A generation holds it from now on: only ``settle`` gives it back."""

    async def settle(self, tokens: int) -> None:
        """Charges ``tokens`` and gives the ticket back. Raises ``RedisUnavailable``."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings a generation and the registry follow (their defaults are ``Settings``')."""

    resume_grace_seconds: float
    cache_ttl_seconds: int  # 0: never cache
    cache_max_bytes: int
    local_cache_seconds: float  # 0: every hit reads Redis

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            resume_grace_seconds=settings.resume_grace_seconds,
            cache_ttl_seconds=settings.cache_ttl_seconds,
            cache_max_bytes=settings.cache_max_bytes,
            local_cache_seconds=settings.cache_local_seconds,
        )


class GenerationView(Protocol):
    """What a follower on this worker reads of a generation, and nothing it could change."""

    @property
    def id(self) -> str: ...
    @property
    def request(self) -> CompletionRequest: ...
    @property
    def payloads(self) -> Sequence[bytes]: ...
    @property
    def stats(self) -> dict[str, Any] | None: ...
    @property
    def error(self) -> ServiceError | None: ...
    @property
    def ended(self) -> bool: ...
    @property
    def host(self) -> str | None: ...
    @property
    def queued(self) -> int | None: ...
    async def wait_beyond(self, index: int, queued: int | None = None) -> None: ...
    async def wait_settled(self) -> None: ...
    def follow(self, index: int, wire: Wire) -> AsyncGenerator[Chunk]: ...


class _Flag:
    """A one-shot ``asyncio.Event`` in a quarter of its memory (a future instead of an object
    with a deque: a generation keeps three, and thousands of generations run at once): set once,
    awaited by any number of tasks, each of which may be cancelled alone."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    async def wait(self) -> None:
        await asyncio.shield(self._future)  # a waiter cancelled leaves the others waiting


async def _unless_redis_fails(charge: Callable[[], Awaitable[None]]) -> None:
    # made here, not by the caller: a charge cancelled before it began leaves no coroutine unawaited
    with contextlib.suppress(RedisUnavailable):
        await charge()


def new_generation_id() -> str:
    """``g_`` and 128 random bits, base64url: unguessable, so the id can authorise a stop."""
    return "g_" + secrets.token_urlsafe(16)


class Generation:
    """One upstream generation, everything it produced so far, and who follows it here.

    Args:
        sha: the request content's hash; ``claimed`` says whether this generation holds the
            content's claim in Redis (joinable and cacheable) or is private (``cache: false``).
        store: where to publish; ``None`` when Redis is unavailable (local clients only).
        account: what the request that made it owes its client's quotas: its concurrency ticket
            is renewed with the lease, and settled with the tokens used once it has ended.
    """

    def __init__(
        self,
        request: CompletionRequest,
        *,
        generation_id: str,
        sha: str,
        claimed: bool,
        store: RedisStore | None,
        policy: Policy,
        leases: Leases | None = None,
        account: Account | None = None,
    ) -> None:
        self.id = generation_id
        self.request = request
        self.sha = sha
        self.claimed = claimed
        self.payloads: list[bytes] = []
        self.stats: dict[str, Any] | None = None
        self.error: ServiceError | None = None
        self.queued: int | None = None  # its place in the GPU queue, until its first token
        self.host: str | None = None  # the host it runs on, once placed
        self._followed = False  # a client has waited on it (then leaving it queued cancels it)
        self._store = store
        self._leases = leases
        self._policy = policy
        self._account = account  # the leader's quotas: its ticket, and what it is charged
        if account is not None:
            account.take()
        self._changed = _Flag()  # a token or the end: for followers here; a new one after each
        self._wake = _Flag()  # for the keeper (see _sleep_until)
        self._tokens_wake = False
        self._remote_clients = 0  # following on other workers, as last counted
        self._described_at = float("-inf")  # when the meta was last written
        self._settled = _Flag()  # the end is written to Redis (or cannot be)
        self._clients = 0
        self._last_client_at = time.monotonic()
        self._ended_at = float("inf")
        self.cached: cache.CachedCompletion | None = None  # set once stored in the cache
        self._producer: asyncio.Task[None] | None = None
        self._cancel_error: ServiceError = Cancelled("The generation was stopped.")
        # its span and GenAI measures; a joiner's or a hit's span links to it by ``trace``
        self._operation = Operation(
            request.kind, request.model, stream=request.stream, generation_id=generation_id,
            content=request.content,
        )  # fmt: skip
        self.trace = self._operation.traceparent

    @property
    def ended(self) -> bool:
        return self.stats is not None or self.error is not None

    @property
    def meta(self) -> Meta:
        return Meta(self.sha, self.request.kind, self.request.model, self.trace)

    def start(self, source: TokenSource) -> list[asyncio.Task[None]]:
        if self._leases is not None:  # the first renewal at a random share, to spread them
            self._leases.renew_in(self, LEASE_RENEW_SECONDS * random.uniform(0.5, 1.0))
        self._producer = asyncio.create_task(self._produce(source), name=self.id)
        return [self._producer, asyncio.create_task(self._keep(), name=f"{self.id} keeper")]

    async def _produce(self, source: TokenSource) -> None:
        try:
            client = "unknown" if self._account is None else self._account.client
            with tracing.current(self._operation.span):  # what the engine is sent continues it
                await source.generate(self.request, self._emit, client=client)
        except ServiceError as exc:
            self._end(error=exc)
        except asyncio.CancelledError:
            self._end(error=self._cancel_error)
            raise
        except Exception:
            logger.exception("generation %s failed", self.id)
            self._end(error=ServiceError("The generation failed inside the service."))

    def _emit(self, chunk: Token | Finished | Queued | Placed) -> None:
        if isinstance(chunk, Placed):
            self.host = chunk.host
            self._operation.placed(chunk.host, chunk.engine)
        elif isinstance(chunk, Queued):
            self._operation.queued(chunk.position)
            if chunk.position != self.queued:
                self.queued = chunk.position
                self._notify()
        elif isinstance(chunk, Token):
            self.queued = None
            self._operation.chunk()
            self.payloads.append(token_payload(chunk.fields))
            self._notify()
            if self._tokens_wake:
                self._wake.set()
        else:
            self._end(stats=chunk.stats)

    def _end(
        self, *, stats: dict[str, Any] | None = None, error: ServiceError | None = None
    ) -> None:
        if not self.ended:
            self.stats, self.error = stats, error
            self._ended_at = time.monotonic()
            self._operation.ended(stats, None if error is None else error.code, self._text)
            self._notify()
            self._wake.set()
            if error is None:
                metrics.GENERATIONS.labels("completed").inc()
            elif isinstance(error, Cancelled | ShuttingDown):
                metrics.GENERATIONS.labels("cancelled").inc()
            elif isinstance(error, RateLimited | QueueTimeout):  # never reached an engine
                metrics.GENERATIONS.labels("refused").inc()
            else:
                metrics.GENERATIONS.labels("failed").inc()
                metrics.UPSTREAM_ERRORS.labels(error.code).inc()

    def _text(self) -> str:
        return "".join(str(token_fields(p).get("text", "")) for p in self.payloads)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = _Flag()

    def attach(self) -> Callable[[], None]:
        """A client follows (or is about to), so the generation will not be abandoned; returns
        what the client calls when it leaves (once; more calls do nothing)."""
        self._clients += 1
        attached = True

        def detach() -> None:
            nonlocal attached
            if attached:
                attached = False
                self._clients -= 1
                if self._clients == 0:
                    self._last_client_at = time.monotonic()
                    if self._leases is not None and not self.ended:
                        self._leases.renew_in(self, 0)  # counts those elsewhere, or not

        return detach

    def cancel(self, error: ServiceError) -> None:
        """Stops the upstream request, if it still runs; followers get ``error``."""
        if not self.ended and self._producer is not None:
            self._cancel_error = error
            self._producer.cancel()

    async def wait_beyond(self, index: int, queued: int | None = None) -> None:
        """Returns once there is a token at ``index``, the generation has ended, or its queue
        position is no longer ``queued``."""
        self._followed = True
        while len(self.payloads) <= index and not self.ended and self.queued == queued:
            await self._changed.wait()

    async def wait_settled(self) -> None:
        """Returns once the end is written to Redis, and the account settled (or cannot be):
        a client told of the end who asks again then finds the cache entry and its quotas."""
        await self._settled.wait()

    async def follow(self, index: int, wire: Wire) -> AsyncGenerator[Chunk]:
        """The events from token ``index`` on, ending with ``done`` or ``error``, in ``wire``;
        while it waits for a slot, its queue position whenever it changes."""
        shown: int | None = None
        while True:
            await self.wait_beyond(index, shown)
            available = len(self.payloads)
            if available > index:
                yield Chunk(wire.tokens(self.id, index, self.payloads[index:available]),
                            available - index)  # fmt: skip
                index = available
                continue
            if not self.ended:  # a new place in the queue
                shown = self.queued
                said = b"" if shown is None else wire.queued(self.id, shown)
                if said:
                    yield Chunk(said, 0, queued=True)
                continue
            await self.wait_settled()  # so that after `done` the cache already has it
            if self.stats is not None:
                yield Chunk(wire.done(self.id, self.stats, cached=False), 0)
                return
            elif self.error is not None:
                yield Chunk(wire.error(self.id, self.error), 0)
                return

    async def announce(self) -> None:
        """Writes what says this generation runs (meta, lease, claim), so its id works on any
        worker. Raises ``RedisUnavailable``."""
        renewal = self.renewal()
        if self._store is not None and renewal is not None:
            await self._store.renew([replace(renewal, describe=True, count=False)])
            self._described_at = time.monotonic()

    def renewal(self) -> Renewal | None:
        """What its next renewal writes (``app.generations.leases``): the lease and the claim; the
        meta once a minute; the clients elsewhere are counted when it matters, when none is here
        (the grace) or some were (have they gone?): a new one says so at once (``watched``).
        ``None`` without Redis: then only the grace is kept."""
        if self._store is None:
            return None
        return Renewal(
            self.id,
            self.meta,
            max(self._policy.cache_ttl_seconds, STREAM_RETENTION_SECONDS),
            self.claimed,
            describe=time.monotonic() - self._described_at >= DESCRIBE_SECONDS,
            count=not self._clients or self._remote_clients > 0,
            concurrency_ticket=None if self._account is None else self._account.lease,
        )

    def renewed(self, renewal: Renewal | None, counted: int | None) -> float:
        """Takes a renewal's outcome (``None``: Redis failed, retried a tick later); returns
        the seconds until the next: ``LEASE_RENEW_SECONDS``, or a tick while nobody follows here."""
        if counted is None:
            self._cancel_if_unread(read=True)  # cannot tell
            return KEEPER_TICK_SECONDS
        if renewal is not None and renewal.describe:
            self._described_at = time.monotonic()
        if renewal is not None and renewal.count:
            self._remote_clients = counted
        self._cancel_if_unread(read=self._remote_clients > 0)
        return LEASE_RENEW_SECONDS if self._clients else KEEPER_TICK_SECONDS

    async def _keep(self) -> None:
        """The keeper: publishes while the generation runs, then writes its end and settles its
        account, before its clients get the end: whoever asks again then finds both."""
        try:
            published = await self._publish_while_running()
            await asyncio.gather(self._write_end(published), self._settle())
        finally:
            self._settled.set()

    async def _settle(self) -> None:
        """Charges the tokens the engine counted (``prompt_eval_count + eval_count``) or, when it
        did not finish, the tokens it produced, and gives the ticket back; records what the engine
        counted as the leader's key's use (``app.store.usage``; only an engine's own counts, so
        nothing for a generation that did not finish), under the model that served. Lost if Redis
        is down: the ticket's lease ends by itself."""
        account = self._account
        if account is None:
            return
        stats = self.stats or {}
        prompt = int(stats.get("prompt_eval_count") or 0)
        output = int(stats.get("eval_count") or 0)
        finished = self.stats is not None  # the engine said done, with its counts
        tokens = prompt + output if finished else len(self.payloads)
        charges = [lambda: account.settle(tokens)]
        usage, used = account.usage, Counts(input_tokens=prompt, output_tokens=output)
        if usage is not None and finished:
            charges.append(lambda: usage.record(account.client, self.request.model, used))
        # each component's round trip, side by side
        await asyncio.gather(*(_unless_redis_fails(charge) for charge in charges))

    async def _publish_while_running(self) -> int:
        """Tokens go to Redis in batches until the generation ends; returns how many tokens are
        published. A batch goes out at the first batch time ``BATCH_SECONDS`` after the last one
        while a client on another worker follows, else a tick (``KEEPER_TICK_SECONDS``) after it:
        nobody reads the stream then but a resume elsewhere, which tells this worker at once
        that it now follows (``watched``). Redis refusing a batch is retried a tick later."""
        clock = asyncio.get_running_loop().time
        published, published_at = 0, clock()
        while not self.ended:
            now = clock()
            if len(self.payloads) == published:
                await self._sleep_until(None, tokens_wake=True)
                continue
            interval = BATCH_SECONDS if self._remote_clients else KEEPER_TICK_SECONDS
            due = batch_time(published_at + interval)
            if due > now:
                await self._sleep_until(due, tokens_wake=False)
                continue
            try:
                published = await self._publish(published)
                # the batch time it woke for, so the next is a whole interval on
                published_at = math.floor(now / BATCH_SECONDS) * BATCH_SECONDS
            except RedisUnavailable:
                published_at = now
        return published

    def watched(self) -> None:
        """A client on another worker began to follow: batches go out promptly from now."""
        self._remote_clients = max(1, self._remote_clients)
        self._wake.set()

    async def _sleep_until(self, deadline: float | None, *, tokens_wake: bool) -> None:
        """Until ``deadline`` (``None``: none), the end or a client elsewhere arriving; with
        ``tokens_wake``, a new token too (it starts a batch's clock)."""
        self._wake = _Flag()
        self._tokens_wake = tokens_wake
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._wake.wait()
        self._tokens_wake = False

    async def _publish(self, published: int) -> int:
        """Writes the tokens from index ``published`` on as one entry; returns how many are."""
        available = len(self.payloads)
        if self._store is not None and available > published:
            entry = entries.batch(published, self.payloads[published:available])
            await self._store.append(self.id, entry, first=published == 0)
        return available

    def _cancel_if_unread(self, *, read: bool) -> None:
        # a queued generation whose clients have left leaves the queue at once: no upstream
        # request is made for nobody (one that nobody has followed yet, a POST's, has the grace)
        waiting = self.queued is not None and self._followed
        grace = 0.0 if waiting else self._policy.resume_grace_seconds
        if self._clients or read:
            self._last_client_at = time.monotonic()
        elif time.monotonic() - self._last_client_at >= grace:
            self.cancel(Cancelled("Nobody was reading the generation."))

    async def _write_end(self, published: int) -> None:
        """Writes the last tokens and the end; clients get the end once it is written. While
        Redis refuses, they get it at once (they have waited long enough) and the writing is
        retried every tick while the claim lasts, so that a request for this content meanwhile
        finds the whole answer instead of a claim that nobody releases."""
        while self._store is not None:
            try:
                published = await self._publish(published)
                await self._finish(self._store)
                return
            except RedisUnavailable:
                if time.monotonic() >= self._ended_at + GENERATION_LEASE_SECONDS:
                    return
                self._settled.set()
                await asyncio.sleep(KEEPER_TICK_SECONDS)

    async def _finish(self, store: RedisStore) -> None:
        sha = self.sha if self.claimed else None
        if isinstance(self.error, ShuttingDown):  # not over: gone, so a resume starts afresh
            await store.abandon(self.id, sha)
            return
        if self.error is not None:
            terminal = entries.failed(self.error)
        else:
            assert self.stats is not None
            terminal = entries.done(self.stats)
        entry = completion = None
        if self.stats is not None and self.claimed and self._policy.cache_ttl_seconds > 0:
            completion = cache.CachedCompletion(
                self.id,
                self.request.kind,
                self.request.model,
                self.payloads,
                self.stats,
                self.trace,
            )
            entry = cache.encode(completion)
            if len(entry) > self._policy.cache_max_bytes:
                logger.info("generation %s is over CACHE_MAX_BYTES, not cached", self.id)
                entry = completion = None
        await store.finish(self.id, sha, terminal, entry, self._policy.cache_ttl_seconds)
        self.cached = completion
