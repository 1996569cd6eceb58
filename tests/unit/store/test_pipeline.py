"""The shared pipeline (``app.store.pipeline``) against a real Valkey, one node and a cluster: calls
of one turn share a round trip, each gets its own replies, and a failure reaches only whom it
concerns while nobody is left waiting."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from app.store.client import Guarded, RedisClient, RedisUnavailable, connect
from app.store.pipeline import SharedPipeline
from harness.servers import free_port
from tests.support.redis import count_pipelines

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


def key(name: str) -> str:
    return f"test:{{{uuid.uuid4().hex}}}:{name}"


async def test_calls_of_one_turn_share_a_round_trip_and_get_their_own_replies(
    redis: RedisClient,
) -> None:
    shared = SharedPipeline(redis, Guarded("test", "failing the test"))
    counter, pipelines = key("n"), count_pipelines(redis)

    def incr_twice(pipe: Any) -> None:
        pipe.incr(counter)
        pipe.incr(counter)

    replies = await asyncio.gather(*(shared.run(incr_twice) for _ in range(20)))
    assert sorted(n for pair in replies for n in pair) == list(range(1, 41))
    assert all(second == first + 1 for first, second in replies)  # each caller's in order
    assert pipelines() == 1
    await shared.run(incr_twice)  # a later turn: a round trip of its own
    assert pipelines() == 2


async def test_posted_commands_ride_the_turns_round_trip_and_nobody_waits(
    redis: RedisClient,
) -> None:
    shared = SharedPipeline(redis, Guarded("test", "failing the test"))
    counter, text, pipelines = key("n"), key("text"), count_pipelines(redis)
    await redis.set(text, "not a number")
    shared.post(lambda pipe: pipe.incr(text))  # fails: nobody hears, nothing is left unread
    shared.post(lambda pipe: pipe.incr(counter))
    assert await shared.run(lambda pipe: pipe.incr(counter)) == [2]  # after, in one round trip
    assert pipelines() == 1


async def test_a_failing_command_fails_its_caller_only(redis: RedisClient) -> None:
    shared = SharedPipeline(redis, Guarded("test", "failing the test"))
    text = key("text")
    await redis.set(text, "not a number")
    good = shared.run(lambda pipe: pipe.incr(key("n")))
    bad = shared.run(lambda pipe: pipe.incr(text))
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert results[0] == [1]
    assert isinstance(results[1], RedisUnavailable)
    assert "not an integer" in str(results[1].__cause__)


async def test_a_cancelled_caller_leaves_the_others_their_replies(redis: RedisClient) -> None:
    shared = SharedPipeline(redis, Guarded("test", "failing the test"))
    counter = key("n")
    leaving = asyncio.create_task(shared.run(lambda pipe: pipe.incr(counter)))
    staying = asyncio.create_task(shared.run(lambda pipe: pipe.incr(counter)))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == [2]  # the cancelled caller's command ran all the same
    assert await redis.get(counter) == b"2"


async def test_redis_down_fails_every_caller_of_the_turn() -> None:
    dead = await connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    shared = SharedPipeline(dead, Guarded("test", "failing the test"))
    calls = [shared.run(lambda pipe: pipe.incr("n")) for _ in range(5)]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert all(isinstance(result, RedisUnavailable) for result in results)
    await dead.aclose()


async def test_a_caller_whose_commands_cannot_be_queued_leaves_nobody_waiting(
    redis: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    shared = SharedPipeline(redis, Guarded("test", "failing the test"))

    def broken(pipe: Any) -> None:
        raise ValueError("a bug")

    calls = [shared.run(lambda pipe: pipe.incr(key("n"))), shared.run(broken)]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert all(isinstance(result, RedisUnavailable) for result in results)
    assert "ValueError: a bug" in caplog.text  # logged with its traceback
