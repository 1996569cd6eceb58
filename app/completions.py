"""Generations: one upstream generation run as a task, followed by clients here and elsewhere.

A ``Generation`` runs a ``TokenSource`` in a task of its own and keeps what it produced (each
token's JSON payload, then Ollama's statistics or the error that ended it), so clients on this
worker follow it from any token index and the task talking to Ollama never waits on a client.
A second task, the keeper, publishes the tokens to Redis for clients on other workers, for
resuming and for the cache: it wakes on a new token, waits ``BATCH_SECONDS`` for more, and
writes them as one stream entry (``XADD``), so a joiner on another worker sees a token at most
about 50 ms (plus a Redis round trip) after one here, and publication costs one round trip per
batch, not per token. Every two seconds (and whenever the last local client leaves) it renews
the leader's leases and counts the clients on other workers: when none has been here or elsewhere
for ``RESUME_GRACE``, the upstream request is cancelled.
A generation is cached only when Ollama said ``done``; a failed or cancelled one never is. Its
clients get the final event only once the end is written to Redis, so a client that saw ``done``
and asks again gets a cache hit, and one that saw an error asks Ollama again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import orjson

from app import cache, events, metrics
from app.errors import Cancelled, ServiceError, ShuttingDown
from app.schema import CompletionRequest, Kind
from app.store import (
    LEASE_SECONDS,
    STREAM_RETENTION_SECONDS,
    RedisStore,
    StoreUnavailable,
    batch_entry,
)

logger = logging.getLogger(__name__)

BATCH_SECONDS = 0.05
TICK_SECONDS = 1.0
RENEW_SECONDS = 2.0  # well inside the 5 s lease


@dataclass(frozen=True, slots=True)
class Token:
    """One upstream chunk worth sending: any of ``text``, ``thinking``, ``tool_calls``."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finished:
    """Ollama said ``done``; ``stats`` holds ``done_reason``, counts and durations."""

    stats: dict[str, Any]


Emit = Callable[[Token | Finished], None]


class TokenSource(Protocol):
    async def generate(self, request: CompletionRequest, emit: Emit) -> None:
        """Emits the request's tokens, then one ``Finished``; raises ``ServiceError``."""


@dataclass(frozen=True, slots=True)
class Policy:
    resume_grace_seconds: float = 0.0
    cache_ttl_seconds: int = 0  # 0: never cache
    cache_max_bytes: int = 1024 * 1024
    local_cache_seconds: float = 0.0  # 0: every hit reads Redis


def new_generation_id() -> str:
    """``g_`` and 128 random bits, base64url: unguessable, so the id can authorise a stop."""
    return "g_" + secrets.token_urlsafe(16)


def as_json(
    kind: Kind, model: str, payloads: Sequence[bytes], stats: dict[str, Any], *, cached: bool
) -> dict[str, Any]:
    """A whole completion as one JSON object, a superset of Ollama's final answer."""
    text: list[str] = []
    thinking: list[str] = []
    tool_calls: list[Any] = []
    for payload in payloads:
        fields = orjson.loads(payload)
        text.append(fields.get("text", ""))
        thinking.append(fields.get("thinking", ""))
        tool_calls.extend(fields.get("tool_calls", ()))
    body: dict[str, Any] = {"model": model, "response": "".join(text)}
    if any(thinking):
        body["thinking"] = "".join(thinking)
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": body["response"]}
        if "thinking" in body:
            message["thinking"] = body["thinking"]
        if tool_calls:
            message["tool_calls"] = tool_calls
        body["message"] = message
    return {**body, **stats, "done": True, "cached": cached}


class Generation:
    """One upstream generation, everything it produced so far, and who follows it here.

    Args:
        sha: the request content's hash; ``claimed`` says whether this generation holds the
            content's claim in Redis (joinable and cacheable) or is private (``cache: false``).
        store: where to publish; ``None`` when Redis is unavailable (local clients only).
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
    ) -> None:
        self.id = generation_id
        self.request = request
        self.sha = sha
        self.claimed = claimed
        self.payloads: list[bytes] = []
        self.stats: dict[str, Any] | None = None
        self.error: ServiceError | None = None
        self._store = store
        self._policy = policy
        self._changed = asyncio.Event()
        self._settled = asyncio.Event()  # the end is written to Redis (or cannot be)
        self._clients = 0
        self._last_client_at = time.monotonic()
        self._ended_at = float("inf")
        self.cached: cache.CachedCompletion | None = None  # set once stored in the cache
        self.cached_bytes = 0
        self._producer: asyncio.Task[None] | None = None
        self._cancel_error: ServiceError = Cancelled("The generation was stopped.")

    @property
    def ended(self) -> bool:
        return self.stats is not None or self.error is not None

    def start(self, source: TokenSource) -> list[asyncio.Task[None]]:
        self._producer = asyncio.create_task(self._produce(source), name=self.id)
        return [self._producer, asyncio.create_task(self._keep(), name=f"{self.id} keeper")]

    async def _produce(self, source: TokenSource) -> None:
        try:
            await source.generate(self.request, self._emit)
        except ServiceError as exc:
            self._end(error=exc)
        except asyncio.CancelledError:
            self._end(error=self._cancel_error)
            raise
        except Exception:
            logger.exception("generation %s failed", self.id)
            self._end(error=ServiceError("The generation failed inside the service."))

    def _emit(self, chunk: Token | Finished) -> None:
        if isinstance(chunk, Token):
            self.payloads.append(events.token_payload(chunk.fields))
            self._notify()
        else:
            self._end(stats=chunk.stats)

    def _end(
        self, *, stats: dict[str, Any] | None = None, error: ServiceError | None = None
    ) -> None:
        if not self.ended:
            self.stats, self.error = stats, error
            self._ended_at = time.monotonic()
            self._notify()
            if error is None:
                metrics.GENERATIONS.labels("completed").inc()
            elif isinstance(error, Cancelled | ShuttingDown):
                metrics.GENERATIONS.labels("cancelled").inc()
            else:
                metrics.GENERATIONS.labels("failed").inc()
                metrics.UPSTREAM_ERRORS.labels(error.code).inc()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def attach(self) -> None:
        """A client follows (or is about to); the generation will not be abandoned."""
        self._clients += 1

    def detach(self) -> None:
        self._clients -= 1
        if self._clients == 0:
            self._last_client_at = time.monotonic()
            self._notify()  # the keeper decides whether the generation is abandoned

    def cancel(self, error: ServiceError) -> None:
        """Stops the upstream request, if it still runs; followers get ``error``."""
        if not self.ended and self._producer is not None:
            self._cancel_error = error
            self._producer.cancel()

    async def wait_beyond(self, index: int) -> None:
        """Returns once there is a token at ``index`` or the generation has ended."""
        while len(self.payloads) <= index and not self.ended:
            await self._changed.wait()

    async def follow(self, index: int = 0) -> AsyncGenerator[bytes]:
        """The encoded events from token ``index`` on, ending with ``done`` or ``error``."""
        while True:
            await self.wait_beyond(index)
            available = len(self.payloads)
            if available > index:
                yield events.tokens(self.id, index, self.payloads[index:available])
                index = available
                continue
            await self._settled.wait()  # so that after `done` the cache already has it
            if self.stats is not None:
                yield events.done(self.id, self.stats, cached=False)
                return
            elif self.error is not None:
                yield events.error(self.id, self.error)
                return

    async def _keep(self) -> None:
        try:
            await self._publish_until_ended()
        finally:
            self._settled.set()

    async def announce(self) -> int:
        """Renews what says this generation runs (meta, lease, claim); returns how many clients
        follow it on other workers. Raises ``StoreUnavailable``."""
        if self._store is None:
            return 0
        meta = orjson.dumps(
            {"sha": self.sha, "kind": self.request.kind, "model": self.request.model}
        )
        ttl = max(self._policy.cache_ttl_seconds, STREAM_RETENTION_SECONDS)
        sha = self.sha if self.claimed else None
        return await self._store.renew(self.id, sha, meta, ttl)

    async def _publish_until_ended(self) -> None:
        published = 0
        renewed_at = float("-inf")
        failed = False  # Redis refused the last round: wait a tick, then try again
        while True:
            if (len(self.payloads) == published or failed) and not self.ended:
                # a random share of a tick, so the keepers of generations started together
                # do not all wake (and renew) in the same instant
                with anyio.move_on_after(TICK_SECONDS * random.uniform(0.5, 1.0)):
                    await self._changed.wait()
                if not self.ended:
                    await asyncio.sleep(BATCH_SECONDS)  # let a batch gather
            ended, available = self.ended, len(self.payloads)
            remote_clients = 0
            if self._store is None:
                published = available
            else:
                try:
                    if available > published:
                        entry = batch_entry(published, self.payloads[published:available])
                        await self._store.append(self.id, entry, first=published == 0)
                        published = available
                    if ended:
                        await self._finish(self._store)
                    elif not self._clients or time.monotonic() - renewed_at >= RENEW_SECONDS:
                        remote_clients = await self.announce()
                        renewed_at = time.monotonic()
                    failed = False
                except StoreUnavailable:
                    failed = True  # retried next round
            if ended and failed and time.monotonic() < self._ended_at + LEASE_SECONDS:
                # clients have waited long enough; the rest and the end are written once Redis
                # is back, so that a request for this content while the claim lasts finds them
                self._settled.set()
                await asyncio.sleep(TICK_SECONDS)
                continue
            if ended:
                return
            if self._clients or remote_clients or failed:
                self._last_client_at = time.monotonic()
            elif time.monotonic() - self._last_client_at >= self._policy.resume_grace_seconds:
                self.cancel(Cancelled("Nobody was reading the generation."))

    async def _finish(self, store: RedisStore) -> None:
        sha = self.sha if self.claimed else None
        if isinstance(self.error, ShuttingDown):  # not over: gone, so a resume starts afresh
            await store.abandon(self.id, sha)
            return
        if self.error is not None:
            terminal = {"error": events.error_data(self.error)}
        else:
            terminal = {"done": orjson.dumps(self.stats)}
        entry = completion = None
        if self.stats is not None and self.claimed and self._policy.cache_ttl_seconds > 0:
            completion = cache.CachedCompletion(
                self.id, self.request.kind, self.request.model, self.payloads, self.stats
            )
            entry = cache.encode(completion)
            if len(entry) > self._policy.cache_max_bytes:
                logger.info("generation %s is over CACHE_MAX_BYTES, not cached", self.id)
                entry = completion = None
        await store.finish(self.id, sha, terminal, entry, self._policy.cache_ttl_seconds)
        if completion is not None and entry is not None:
            self.cached, self.cached_bytes = completion, len(entry)
