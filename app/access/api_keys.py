"""API keys: made, listed and revoked by a person (``python -m app keys ...``), looked up by the
service on every request that carries one.

A key is ``bib_`` and 256 random bits (base64url). It is shown once, when it is made, and Redis
holds only its SHA-256: a key has far too much entropy to be found from its hash, so a plain
hash is enough, and a lookup by hash compares nothing in Python whose timing could tell how much
of a guess was right. Per key, Redis holds its name, when it was made, its limits (each
overrides the service's default for that key's requests; absent: the default), its priority
band (the highest its generations wait in for a GPU slot: ``app.access.placement``), the models
it may use and its own aliases (``app.access.models``), when it expires, and a note.

    bib:{keys}:key:<sha256>   the key's record (JSON)
    bib:{keys}:names          name -> sha256, for ``list``, ``update`` and ``revoke``
    bib:{keys}:used           name -> when it was last used, for ``list``

All share one hash tag, so creating and revoking are one transaction, on a cluster too. A
worker keeps what it looked up for ``LOOKUP_SECONDS``, so a revoked or changed key is so on
every replica within a second while a busy client costs no Redis round trip per request; when
it reads a record again, it notes the key's use. An expired key stays listed, and is refused
(``app.access.identity``) from the second it expires, whatever a worker kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import orjson

from app.settings import BANDS
from app.store import keys
from app.store.client import Guarded, RedisClient, RedisUnavailable

LOOKUP_SECONDS = 0.5
PREFIX = "bib_"
# what a key may override: its setting's name (stored, shown) -> the quota (``quotas.Limits``)
LIMITS = {"rate_limit_max": "requests", "token_limit_max": "tokens",
          "concurrency_limit": "concurrency"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    created: float
    limits: dict[str, int] = field(default_factory=dict)
    priority: str = BANDS[0]
    models: tuple[str, ...] = ()  # the patterns of the models it may use; empty: all
    aliases: dict[str, str] = field(default_factory=dict)  # its own, over MODEL_ALIASES
    expires: float | None = None  # epoch seconds
    note: str = ""
    used: float | None = None  # when it was last used, as listed (not in the record)

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def _record(entry: ApiKey) -> bytes:
    return orjson.dumps({"name": entry.name, "created": entry.created, "limits": entry.limits,
                         "priority": entry.priority, "models": entry.models,
                         "aliases": entry.aliases, "expires": entry.expires,
                         "note": entry.note})  # fmt: skip


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(found: bytes | str) -> ApiKey:
    fields = orjson.loads(found)
    priority = fields.get("priority")  # keys made before priorities: the first band
    # and before models, aliases, expiry and notes: none of them
    return ApiKey(fields["name"], fields["created"], fields.get("limits") or {},
                  priority if priority in BANDS else BANDS[0], tuple(fields.get("models") or ()),
                  fields.get("aliases") or {}, fields.get("expires"),
                  fields.get("note") or "")  # fmt: skip


async def create(redis: RedisClient, name: str, limits: dict[str, int],
                 priority: str = BANDS[0], **rest: Any) -> str | None:  # fmt: skip
    """Makes a key named ``name`` and returns it (the only time it is ever seen); ``None``
    when a key of that name exists. ``rest``: the record's other fields (``ApiKey``)."""
    key = new_key()
    sha = digest(key)
    record = _record(ApiKey(name, time.time(), limits, priority, **rest))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hsetnx(keys.API_KEY_NAMES, name, sha)
        pipe.set(keys.api_key(sha), record, nx=True)
        made, _ = await pipe.execute()
    if not made:
        await redis.delete(keys.api_key(sha))  # the name was taken: this record is nobody's
        return None
    return key


async def listed(redis: RedisClient) -> list[ApiKey]:
    """Every key's record with its last use, by name (never the key, which nobody holds but its
    owner)."""
    names = await redis.hgetall(keys.API_KEY_NAMES)
    used = {_text(k): float(v) for k, v in (await redis.hgetall(keys.API_KEYS_USED)).items()}
    found = []
    for name in sorted(names, key=_text):
        record = await redis.get(keys.api_key(_text(names[name])))
        if record is not None:
            entry = _parse(record)
            found.append(replace(entry, used=used.get(entry.name)))
    return found


async def update(redis: RedisClient, name: str, limits: dict[str, int], **changes: Any) -> bool:
    """Changes the record of the key named ``name`` (the key itself stays): ``limits`` each
    over the key's own, ``changes`` its other fields; ``False`` when there is none. Every
    replica serves the change within ``LOOKUP_SECONDS``."""
    sha = await redis.hget(keys.API_KEY_NAMES, name)
    found = None if sha is None else await redis.get(keys.api_key(_text(sha)))
    if sha is None or found is None:
        return False
    entry = _parse(found)
    changed = replace(entry, limits={**entry.limits, **limits}, **changes)
    return bool(await redis.set(keys.api_key(_text(sha)), _record(changed), xx=True))


async def revoke(redis: RedisClient, name: str) -> bool:
    """Removes the key named ``name``; ``False`` when there is none."""
    sha = await redis.hget(keys.API_KEY_NAMES, name)
    if sha is None:
        return False
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.api_key(_text(sha)))
        pipe.hdel(keys.API_KEY_NAMES, name)
        pipe.hdel(keys.API_KEYS_USED, name)
        await pipe.execute()
    return True


class ApiKeys:
    """The service's lookups: which key, if any, a request's secret is."""

    def __init__(
        self, redis: RedisClient, *, clock: Callable[[], float] = time.monotonic,
        gate: asyncio.Semaphore | None = None,
    ) -> None:  # fmt: skip
        self._redis = redis
        self._clock = clock
        self._call = Guarded("keys", "refusing keys it cannot check", gate=gate)
        self._known: dict[str, tuple[float, ApiKey]] = {}  # real keys only: guesses ask Redis
        self._asking: dict[str, asyncio.Future[ApiKey | None]] = {}  # one question per key

    async def lookup(self, key: str) -> ApiKey | None:
        """The key's record, or ``None`` for a key that does not exist (or no longer).
        Raises ``RedisUnavailable`` when Redis cannot say and this worker does not know."""
        sha = digest(key)
        known = self._known.get(sha)
        if known is not None and known[0] > self._clock():
            return known[1]
        asking = self._asking.get(sha)
        if asking is None:  # the requests of a busy key that arrive together ask once
            asking = self._asking[sha] = asyncio.ensure_future(self._ask(sha))
            asking.add_done_callback(lambda _: self._asking.pop(sha, None))
        return await asyncio.shield(asking)

    async def _ask(self, sha: str) -> ApiKey | None:
        # the client is built without decode_responses, so values are bytes
        found = cast(bytes | None, await self._call(lambda: self._redis.get(keys.api_key(sha))))
        if found is None:
            self._known.pop(sha, None)
            return None
        entry = _parse(found)
        self._known[sha] = (self._clock() + LOOKUP_SECONDS, entry)
        # a key's use, as often as it is read: within LOOKUP_SECONDS of the last
        with contextlib.suppress(RedisUnavailable):
            await self._call(lambda: self._redis.hset(keys.API_KEYS_USED, entry.name, time.time()))
        return entry
