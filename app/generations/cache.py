"""Finished completions as cache entries, and the canonical key of a request's content.

The key is the full sha256 of the request's content (kind, model, prompt or messages, system,
options, format, think, tools) as JSON with sorted keys, so key order in a client's JSON never
splits the cache, while ``stream``, ``cache`` and ``keep_alive`` never enter it: one entry serves
SSE and JSON callers. An entry is one header line of JSON (generation id, kind, model, the engine's
final statistics) followed by one line per token payload, exactly the bytes the live stream sent,
so a replay is byte-identical and decoding is one split. Only completions that the engine finished
(``done``) are ever encoded; entries over ``CACHE_MAX_BYTES`` are not stored.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from app.generations.request import CompletionRequest, Kind

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CachedCompletion:
    generation: str
    kind: Kind
    model: str
    payloads: Sequence[bytes]
    stats: dict[str, Any]
    trace: str = ""  # the traceparent of the generation's span, when it was traced


def content_hash(request: CompletionRequest) -> str:
    return hashlib.sha256(orjson.dumps(request.content(), option=orjson.OPT_SORT_KEYS)).hexdigest()


def encode(completion: CachedCompletion) -> bytes:
    header = orjson.dumps(
        {
            "generation": completion.generation,
            "kind": completion.kind,
            "model": completion.model,
            "stats": completion.stats,
            **({"trace": completion.trace} if completion.trace else {}),
        }
    )
    return b"\n".join([header, *completion.payloads])


def decode(entry: bytes) -> CachedCompletion:
    """Raises ``ValueError`` for an entry that is not ours (then it is treated as a miss)."""
    header, *payloads = entry.split(b"\n")
    try:
        fields = orjson.loads(header)
        return CachedCompletion(
            fields["generation"],
            fields["kind"],
            fields["model"],
            payloads,
            fields["stats"],
            fields.get("trace", ""),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError("not a cache entry") from exc


class LocalCopies(Generic[T]):
    """This worker's copies of recently used cache entries, so a popular answer costs no Redis
    round trip. Entries are immutable (the key is their content), and a copy never outlives
    ``max_seconds`` nor the Redis entry's own TTL, so copies never disagree with Redis for longer
    than that. Expired copies leave memory at the next ``get`` or ``put`` of any copy, not only when
    they are asked for again (else one-off answers pile up to the byte bound). Least recently used
    copies go first past ``max_bytes``, counted as the ``size`` each copy really holds.

    Args:
        clock: monotonic seconds; tests pass their own.
    """

    def __init__(
        self,
        *,
        max_seconds: float,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_seconds = max_seconds
        self._max_bytes = max_bytes
        self._clock = clock
        self._bytes = 0
        self._copies: OrderedDict[str, tuple[float, int, T]] = OrderedDict()
        self._expiries: list[tuple[float, str]] = []  # a heap; a replaced copy's entry is stale

    def __len__(self) -> int:
        return len(self._copies)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def get(self, sha: str) -> T | None:
        self._drop_expired()
        found = self._copies.get(sha)
        if found is None:
            return None
        self._copies.move_to_end(sha)
        return found[2]

    def put(self, sha: str, value: T, *, size: int, ttl_seconds: float) -> None:
        self._drop_expired()
        seconds = min(self._max_seconds, ttl_seconds)
        if seconds <= 0 or size > self._max_bytes:
            return
        self._drop(sha)
        expires_at = self._clock() + seconds
        self._copies[sha] = (expires_at, size, value)
        heapq.heappush(self._expiries, (expires_at, sha))
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._copies)))

    def _drop_expired(self) -> None:
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, sha = heapq.heappop(self._expiries)
            found = self._copies.get(sha)
            if found is not None and found[0] == expires_at:
                self._drop(sha)

    def _drop(self, sha: str) -> None:
        found = self._copies.pop(sha, None)
        if found is not None:
            self._bytes -= found[1]
