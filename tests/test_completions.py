"""Generations: one upstream run, followed by any number of clients from any token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.completions import Generations
from app.errors import UpstreamError
from app.schema import CompletionRequest
from tests import sse
from tests.fakes import ScriptedSource

pytestmark = pytest.mark.anyio

REQUEST = CompletionRequest(model="llama3.2", prompt="Hi")


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_followers_get_identical_events_from_one_upstream_run() -> None:
    source = ScriptedSource(texts=["a", "b", "c"])
    generation = Generations(source).start(REQUEST)
    first, second = await asyncio.gather(collect(generation.follow()), collect(generation.follow()))
    assert first == second
    assert [e.type for e in sse.events(first)] == ["token", "token", "token", "done"]
    assert sse.text_of(first) == "abc"
    assert len(source.requests) == 1


async def test_following_from_an_index_skips_what_was_read() -> None:
    generation = Generations(ScriptedSource(texts=["a", "b", "c"])).start(REQUEST)
    await generation.wait_ended()
    tail = sse.events(await collect(generation.follow(2)))
    assert [e.last_event_id for e in tail] == [f"{generation.id}.2", f"{generation.id}.done"]


async def test_an_upstream_error_ends_every_follower_with_it() -> None:
    source = ScriptedSource(texts=["a"], error=UpstreamError("gone"))
    generation = Generations(source).start(REQUEST)
    body = await collect(generation.follow())
    *_, error = sse.events(body)
    assert error.json() == {"error": "upstream_error", "detail": "gone"}
    assert generation.stats is None


async def test_last_follower_leaving_cancels_upstream() -> None:
    gate = asyncio.Event()
    source = ScriptedSource(texts=["a"] * 10, gate=gate)
    generation = Generations(source).start(REQUEST)
    stream = generation.follow()
    gate.set()
    await stream.__anext__()
    await stream.aclose()
    await asyncio.sleep(0)
    await generation.wait_ended()
    assert source.cancelled == 1
    assert generation.error is not None
    assert generation.error.code == "cancelled"


async def test_result_joins_the_text_for_json_callers() -> None:
    generation = Generations(ScriptedSource(texts=["Hel", "lo"])).start(REQUEST)
    await generation.wait_ended()
    assert generation.result(cached=False) == {
        "model": "llama3.2",
        "response": "Hello",
        "done_reason": "stop",
        "eval_count": 2,
        "done": True,
        "cached": False,
    }


async def test_closing_cancels_running_generations() -> None:
    source = ScriptedSource(texts=["a"], gate=asyncio.Event())
    generations = Generations(source)
    generation = generations.start(REQUEST)
    await asyncio.sleep(0)
    await generations.aclose()
    assert source.cancelled == 1
    assert generation.ended
