"""Stored responses of OpenAI's Responses API: one JSON record a response, kept for
``RESPONSES_TTL`` so that any replica continues, retrieves, streams or cancels it. What a
record holds is the surface's (``app.api.openai.responses``); here it is bytes under a key."""

from __future__ import annotations

import asyncio
from typing import cast

from app.store import keys
from app.store.client import Guarded, RedisClient
from app.store.pipeline import SharedPipeline


class ResponseRecords:
    def __init__(self, redis: RedisClient, *, ttl_seconds: int,
                 gate: asyncio.Semaphore | None = None) -> None:  # fmt: skip
        self._redis = redis
        self.ttl_seconds = ttl_seconds
        self._call = Guarded("responses", "keeping no responses", gate=gate)
        self._shared = SharedPipeline(redis, self._call)  # saves at once: one round trip

    async def save(self, response_id: str, record: bytes) -> None:
        """Raises ``RedisUnavailable``."""
        key = keys.response(response_id)
        await self._shared.run(lambda pipe: pipe.set(key, record, ex=self.ttl_seconds))

    async def load(self, response_id: str) -> bytes | None:
        """Raises ``RedisUnavailable``."""
        key = keys.response(response_id)
        # the client is built without decode_responses, so values are bytes
        return cast(bytes | None, await self._call(lambda: self._redis.get(key)))

    async def delete(self, response_id: str) -> bool:
        """Whether there was one. Raises ``RedisUnavailable``."""
        key = keys.response(response_id)
        return bool(await self._call(lambda: self._redis.delete(key)))
