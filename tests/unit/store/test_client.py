"""Meeting a failing Redis (``Guarded``), and connecting to one server or a cluster."""

from __future__ import annotations

import asyncio

import pytest

from app.store.client import Guarded, RedisUnavailable, is_cluster

pytestmark = pytest.mark.anyio


async def test_after_a_failure_calls_fail_at_once_for_a_while() -> None:
    """During an outage nothing waits for a connect timeout: the network is left alone for
    ``retry_after_seconds``, then tried again."""
    guarded = Guarded("tests", "failing the test", retry_after_seconds=0.2)
    attempts = 0

    async def refused() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("no Redis here")

    with pytest.raises(RedisUnavailable, match="no Redis here"):
        await guarded(refused)
    for _ in range(3):
        with pytest.raises(RedisUnavailable, match="a moment ago"):
            await guarded(refused)
    assert (attempts, guarded.failures) == (1, 1)
    await asyncio.sleep(0.25)
    with pytest.raises(RedisUnavailable, match="no Redis here"):
        await guarded(refused)  # the short-circuit was over: tried again
    assert (attempts, guarded.failures) == (2, 2)


async def test_a_redis_that_answers_is_used_and_its_results_returned() -> None:
    guarded = Guarded("tests", "failing the test")

    async def answer() -> str:
        return "PONG"

    assert await guarded(answer) == "PONG"
    assert guarded.failures == 0


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        pytest.param("redis://h:6379/0", False, id="server"),
        pytest.param("rediss://h:6379/0", False, id="tls"),
        pytest.param("unix:///run/redis.sock", False, id="unix"),
        pytest.param("redis+cluster://h:7000", True, id="cluster"),
        pytest.param("rediss+cluster://h:7000", True, id="cluster-tls"),
    ],
)
def test_the_url_says_whether_it_is_a_cluster(url: str, cluster: bool) -> None:
    assert is_cluster(url) is cluster


async def test_a_gate_bounds_the_calls_in_flight_except_those_it_lets_by() -> None:
    """Components sharing a client share its gate (``REDIS_MAX_CONNECTIONS``); a blocking read
    on a client of its own passes by, so it never keeps quick commands waiting."""
    gate = asyncio.Semaphore(2)
    store, limiter = Guarded("a", "x", gate=gate), Guarded("b", "x", gate=gate)
    running = most = 0
    release = asyncio.Event()

    async def command() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1

    calls = [asyncio.create_task(g(command)) for g in (store, limiter) * 5]
    calls.append(asyncio.create_task(store(command, gated=False)))
    await asyncio.sleep(0.05)
    assert running == 3  # two through the gate, and the blocking read beside them
    release.set()
    await asyncio.gather(*calls)
    assert most == 3
