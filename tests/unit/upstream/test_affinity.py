"""Conversation affinity's index (``app.upstream.affinity``) against a real Valkey, one node and
a cluster: a conversation's next turn finds the host of its last, the longest prefix and a
session win, and an ejected or unknown host is no answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import pytest

from app.generations.request import CompletionRequest
from app.store.client import RedisClient
from app.upstream import affinity
from app.upstream.affinity import CHUNK_CHARACTERS, Affinity, chain

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]
SYSTEM = "You are a careful assistant. " * 200  # about 5,600 characters: five chunks


def turn(*texts: str, model: str = "llama3.2", system: str = SYSTEM) -> CompletionRequest:
    """A conversation of ``texts``, user and assistant in turn."""
    roles = ("user", "assistant")
    messages = tuple({"role": roles[i % 2], "content": t} for i, t in enumerate(texts))
    return CompletionRequest(model=model, system=system, messages=messages)


async def preferred(index: Affinity, asked: CompletionRequest, urls: Sequence[str],
                    expected: int | None, session: str | None = None) -> int | None:  # fmt: skip
    """What the index prefers, once what was recorded (sent waited for by nobody) is in."""
    deadline = time.monotonic() + 2
    while (found := (await index.lookup(asked, session, urls)).preferred) != expected:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    return found


def hosts() -> list[str]:
    return [f"http://gpu-{uuid.uuid4().hex[:8]}:11434" for _ in range(3)]


def test_each_turn_extends_the_chain_of_the_turn_before() -> None:
    first = chain(turn("Where is Lyon?"))
    second = chain(turn("Where is Lyon?", "In France. " * 200, "And Porto?"))
    assert len(first) == len(SYSTEM) // CHUNK_CHARACTERS
    assert second[: len(first)] == first
    assert len(second) > len(first)
    assert chain(turn("Where is Lyon?", model="qwen3"))[0] != first[0]  # its own engine cache
    assert chain(turn("Where is Lyon?", system="Be brief.")) == []  # shorter than a chunk


async def test_the_next_turn_goes_where_the_last_was_served(redis: RedisClient) -> None:
    index, urls = Affinity(redis, ttl_seconds=60, spill=2), hosts()
    asked = turn("Where is Lyon?")
    first = await index.lookup(asked, None, urls)
    assert first.preferred is None
    index.record(first, urls[1])
    later = turn("Where is Lyon?", "In France.", "And Porto?")
    assert await preferred(index, later, urls, 1) == 1
    assert (await index.lookup(later, None, urls[::-1])).preferred == 1  # by URL, not place
    assert (await index.lookup(later, None, [urls[0], urls[2]])).preferred is None  # not a host


async def test_the_longest_prefix_and_then_a_session_win(redis: RedisClient) -> None:
    index, urls = Affinity(redis, ttl_seconds=60, spill=2), hosts()
    shared = turn("Summarise this.")
    index.record(await index.lookup(shared, None, urls), urls[0])
    assert await preferred(index, shared, urls, 0) == 0
    longer = turn("Summarise this.", "Done. " * 400, "Now shorter.")
    index.record(await index.lookup(longer, None, urls), urls[2])
    next_turn = turn("Summarise this.", "Done. " * 400, "Now shorter.", "Here.", "Thanks.")
    assert await preferred(index, next_turn, urls, 2) == 2
    # what the two share (the system prompt) names the host that served it last
    assert (await index.lookup(turn("Summarise that."), None, urls)).preferred == 2
    session = uuid.uuid4().hex
    index.record(await index.lookup(turn("Hi."), session, urls), urls[1])
    assert await preferred(index, next_turn, urls, 1, session) == 1


async def test_an_ejected_host_loses_its_entries(redis: RedisClient) -> None:
    index, urls = Affinity(redis, ttl_seconds=60, spill=2), hosts()
    asked = turn("Where is Lyon?")
    index.record(await index.lookup(asked, None, urls), urls[0])
    assert await preferred(index, asked, urls, 0) == 0
    index.forget(urls[0])
    assert await preferred(index, asked, urls, None) is None
    index.record(await index.lookup(asked, None, urls), urls[0])  # served there again since
    assert await preferred(index, asked, urls, 0) == 0


@pytest.mark.parametrize(("preferred", "chosen", "result"),
                         [(None, 1, "miss"), (1, 1, "hit"), (1, 0, "spill")])  # fmt: skip
def test_outcomes(preferred: int | None, chosen: int, result: str) -> None:
    match = affinity.Match(preferred, [], {})
    assert affinity.outcome(match, chosen) == result
