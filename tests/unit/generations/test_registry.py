"""The registry of a worker's generations on a real Valkey (and a cluster), with scripted
sources: identical requests on one worker follow one generation there, and batches go out as
often as someone elsewhere reads them. Two registries on one Redis are two workers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from app.generations.feeds import LocalFeed
from app.generations.generation import Policy
from app.generations.registry import Registry
from app.generations.request import CompletionRequest
from app.store import keys
from app.store.generations import RedisStore
from app.upstream.engine import Emit, Finished, Token
from tests.support.bodies import unique
from tests.support.fakes import ScriptedSource

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def test_identical_requests_racing_on_one_worker_all_follow_it_here(
    store: RedisStore,
) -> None:
    """Issue 12: identical requests arriving together on one worker lost the claim to a
    generation of that same worker and followed it through Redis, each with a blocking read
    of its own (300 streams on one generation held 342 Redis connections)."""
    source = ScriptedSource(texts=["a", "b"], gate=asyncio.Event())
    policy = Policy(resume_grace_seconds=5, cache_ttl_seconds=60, cache_max_bytes=1 << 20,
                    local_cache_seconds=0)  # fmt: skip
    registry = Registry(source, store, policy)
    request = CompletionRequest(model="llama3.2", prompt=unique("raced"))
    feeds = await asyncio.gather(*(registry.open(request) for _ in range(30)))
    try:
        assert sorted(f.x_cache for f in feeds) == ["JOINED"] * 29 + ["MISS"]
        assert {type(f) for f in feeds} == {LocalFeed}
        assert len(source.requests) == 1
    finally:
        for feed in feeds:
            await feed.aclose()
        await registry.aclose()


@dataclass
class Ticking:
    """A ``TokenSource`` that emits a token every ``seconds``, ``count`` of them."""

    count: int
    seconds: float

    async def generate(self, request: CompletionRequest, emit: Emit, *, client: str = "") -> None:
        for index in range(self.count):
            await asyncio.sleep(self.seconds)
            emit(Token({"text": f"{index} "}))
        emit(Finished({"done_reason": "stop"}))


async def test_batches_go_out_a_tick_apart_until_a_client_elsewhere_follows(
    store: RedisStore,
) -> None:
    """Issue 12: nobody reads a generation's stream but clients on other workers, so until
    one comes its batches go out a tick apart; from the first watch on, every batch time.
    Two registries on one Redis are two workers."""
    policy = Policy(resume_grace_seconds=5, cache_ttl_seconds=60, cache_max_bytes=1 << 20,
                    local_cache_seconds=0)  # fmt: skip
    leader = Registry(Ticking(count=200, seconds=0.01), store, policy)
    elsewhere = Registry(ScriptedSource(), store, policy)
    listening = asyncio.create_task(leader.listen())
    await asyncio.sleep(0.1)  # subscribed
    feed = await leader.open(CompletionRequest(model="llama3.2", prompt=unique("ticking")))
    events = keys.generation(feed.generation_id, "events")
    try:
        await asyncio.sleep(1.5)  # some 150 tokens, watched by nobody elsewhere
        assert 1 <= await store.redis.xlen(events) <= 2
        remote = await elsewhere.find(feed.generation_id)
        assert remote is not None
        await remote.ready(1)
        before = await store.redis.xlen(events)
        # a batch every 0.05 s from now on; a tick apart, 0.9 s would hold one or two at most
        deadline = asyncio.get_running_loop().time() + 0.9
        while await store.redis.xlen(events) - before < 4:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
    finally:
        listening.cancel()
        await feed.aclose()
        if remote is not None:
            await remote.aclose()
        await leader.aclose()
        await elsewhere.aclose()
