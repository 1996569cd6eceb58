"""A generation on its own (no Redis): one upstream run, followed from any token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.api.native.events import NATIVE
from app.errors import Cancelled, UpstreamError
from app.generations.generation import Generation, Policy, new_generation_id
from app.generations.leases import Leases
from app.generations.request import CompletionRequest
from app.generations.wire import Chunk
from tests.support import sse
from tests.support.fakes import ScriptedSource

pytestmark = pytest.mark.anyio

REQUEST = CompletionRequest(model="llama3.2", prompt="Hi")


def start(source: ScriptedSource, grace_seconds: float = 0.0) -> Generation:
    generation = Generation(
        REQUEST,
        generation_id=new_generation_id(),
        sha="0" * 64,
        claimed=False,
        store=None,
        policy=Policy(
            resume_grace_seconds=grace_seconds,
            cache_ttl_seconds=0,
            cache_max_bytes=1 << 20,
            local_cache_seconds=0,
        ),
        leases=Leases(None),  # keeps the grace
    )
    generation.start(source)
    return generation


async def collect(stream: AsyncIterator[Chunk]) -> bytes:
    return b"".join([chunk.data async for chunk in stream])


async def test_followers_get_identical_events_from_one_upstream_run() -> None:
    source = ScriptedSource(texts=["a", "b", "c"])
    generation = start(source)
    generation.attach()
    first, second = await asyncio.gather(
        collect(generation.follow(0, NATIVE)), collect(generation.follow(0, NATIVE))
    )
    assert first == second
    assert [e.type for e in sse.events(first)] == ["token", "token", "token", "done"]
    assert sse.text_of(first) == "abc"
    assert len(source.requests) == 1


async def test_following_from_an_index_skips_what_was_read() -> None:
    generation = start(ScriptedSource(texts=["a", "b", "c"]))
    generation.attach()
    await generation.wait_beyond(3)
    tail = sse.events(await collect(generation.follow(2, NATIVE)))
    assert [e.last_event_id for e in tail] == [f"{generation.id}.2", f"{generation.id}.done"]


async def test_an_upstream_error_ends_every_follower_with_it() -> None:
    generation = start(ScriptedSource(texts=["a"], error=UpstreamError("gone")))
    generation.attach()
    *_, error = sse.events(await collect(generation.follow(0, NATIVE)))
    assert error.json() == {"error": "upstream_error", "detail": "gone"}
    assert generation.stats is None


async def test_last_client_leaving_cancels_upstream_after_the_grace() -> None:
    gate = asyncio.Event()
    source = ScriptedSource(texts=["a"] * 10, gate=gate)
    generation = start(source, grace_seconds=0.3)
    detach = generation.attach()
    gate.set()
    await generation.wait_beyond(0)
    detach()
    await asyncio.sleep(0.2)
    assert not generation.ended  # still inside the grace: a reconnect could resume
    await asyncio.wait_for(generation.wait_beyond(10), 2)
    assert source.cancelled == 1
    assert generation.error is not None
    assert generation.error.code == "cancelled"


async def test_a_returning_client_keeps_the_generation() -> None:
    gate = asyncio.Event()
    source = ScriptedSource(texts=["a"] * 3, gate=gate)
    generation = start(source, grace_seconds=0.3)
    generation.attach()()  # attached, then gone
    generation.attach()
    await asyncio.sleep(0.5)
    assert source.cancelled == 0
    generation.cancel(Cancelled("stop"))
    await asyncio.wait_for(generation.wait_beyond(3), 1)
    assert generation.error is not None
    assert generation.error.detail == "stop"


async def test_a_flag_wakes_every_waiter_though_one_was_cancelled() -> None:
    from app.generations.generation import _Flag

    flag = _Flag()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    flag.set()
    flag.set()  # once is enough; again does nothing
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [None, None]
    await asyncio.wait_for(flag.wait(), 0.1)  # set: no waiting
