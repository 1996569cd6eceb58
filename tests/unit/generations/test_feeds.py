"""Feeds: the same bytes from a cached completion and from a generation followed through Redis
(a real Valkey, and a cluster), and how a remote feed ends when its generation is lost."""

from __future__ import annotations

import uuid

import pytest

from app.api.native import events
from app.api.native.events import NATIVE
from app.errors import ServiceError, UpstreamTimeout
from app.generations.answer import gather
from app.generations.cache import CachedCompletion
from app.generations.feeds import CachedFeed, RemoteFeed
from app.generations.generation import new_generation_id
from app.store import entries
from app.store.generations import Meta, RedisStore, Renewal

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

PAYLOADS = [b'{"text":"Hel"}', b'{"text":"lo"}', b'{"text":"!"}']
STATS = {"done_reason": "stop", "eval_count": 3}


class Running:
    halted: ServiceError | None = None  # a worker that is not stopping


async def leader(store: RedisStore) -> str:
    """A generation some other worker leads: announced, its lease alive."""
    generation = new_generation_id()
    meta = Meta(uuid.uuid4().hex * 2, "generate", "m")
    await store.renew([Renewal(generation, meta, 60, claimed=False, describe=True, count=False)])
    return generation


def remote(store: RedisStore, generation: str) -> RemoteFeed:
    return RemoteFeed(store, generation, "generate", "m", "JOINED", Running())


async def read_all(feed: RemoteFeed | CachedFeed, index: int = 0) -> tuple[bytes, int]:
    chunks = [chunk async for chunk in feed.chunks(index, NATIVE)]
    return b"".join(c.data for c in chunks), sum(c.tokens for c in chunks)


async def test_a_remote_feed_gives_the_bytes_a_local_one_gives(store: RedisStore) -> None:
    generation = await leader(store)
    await store.append(generation, entries.batch(0, PAYLOADS[:2]), first=True)
    await store.append(generation, entries.batch(2, PAYLOADS[2:]), first=False)
    await store.finish(generation, None, entries.done(STATS), None, 60)
    feed = remote(store, generation)
    data, tokens = await read_all(feed, 1)
    expected = events.tokens(generation, 1, PAYLOADS[1:]) + events.done(generation, STATS,
                                                                       cached=False)  # fmt: skip
    assert (data, tokens) == (expected, 2)
    assert (await remote(store, generation).answer()).text == "Hello!"
    await feed.aclose()


async def test_a_remote_error_ends_the_feed_with_that_error(store: RedisStore) -> None:
    generation = await leader(store)
    await store.append(generation, entries.batch(0, PAYLOADS[:1]), first=True)
    await store.finish(generation, None, entries.failed(UpstreamTimeout("late")), None, 60)
    data, _ = await read_all(remote(store, generation))
    assert data.endswith(events.error(generation, UpstreamTimeout("late")))
    with pytest.raises(UpstreamTimeout, match="late"):
        await remote(store, generation).answer()


async def test_entries_that_redis_lost_end_the_feed(store: RedisStore) -> None:
    """A batch that does not follow the tokens read so far: the start is gone, so is the feed."""
    generation = await leader(store)
    await store.append(generation, entries.batch(2, PAYLOADS[2:]), first=True)
    data, tokens = await read_all(remote(store, generation))
    assert tokens == 0
    assert b'"detail":"Part of the generation was lost; ask again."' in data


async def test_a_leader_whose_lease_ran_out_is_gone(store: RedisStore) -> None:
    generation = new_generation_id()  # never announced: no lease
    await store.append(generation, entries.batch(0, PAYLOADS[:1]), first=True)
    data, tokens = await read_all(remote(store, generation))
    assert tokens == 1
    assert b'"detail":"The worker running this generation went away."' in data


def test_a_cached_feed_replays_from_any_token_counting_them() -> None:
    feed = CachedFeed(CachedCompletion("g_x", "generate", "m", PAYLOADS, STATS))
    whole = feed.replay(0, NATIVE)
    assert whole.data == events.tokens("g_x", 0, PAYLOADS) + events.done("g_x", STATS, cached=True)
    assert whole.tokens == 3
    assert feed.replay(0, NATIVE) is whole  # built once, for the many hits of a hot entry
    assert feed.replay(2, NATIVE).tokens == 1
    assert feed.replay(3, NATIVE).tokens == 0


async def test_the_answer_joins_the_text_for_json_callers() -> None:
    payloads = [b'{"text":"Hel","thinking":"hm"}', b'{"tool_calls":[{"f":1}]}', b'{"text":"lo"}']
    chat = events.answer_body(gather("chat", "m", payloads, {"done_reason": "stop"}, cached=True))
    assert chat == {
        "model": "m",
        "response": "Hello",
        "thinking": "hm",
        "message": {"role": "assistant", "content": "Hello", "thinking": "hm",
                    "tool_calls": [{"f": 1}]},
        "done_reason": "stop",
        "done": True,
        "cached": True,
    }  # fmt: skip
