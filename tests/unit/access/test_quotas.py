"""The quotas against a real Valkey, on a clock the test controls: requests and tokens per
sliding window, and generations running at once."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import warnings

import pytest
from redis.asyncio import RedisCluster

from app.access.quotas import Decision, Limits, Quotas, client_key
from app.store import keys
from app.store.client import RedisClient, RedisUnavailable, connect
from app.store.generations import Meta, RedisStore, Renewal
from harness.servers import free_port
from tests.support.redis import count_pipelines

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


class Clock:
    def __init__(self, now: float = 1_000_020.0) -> None:  # 20 s into a 60 s window
        self.now = now

    def __call__(self) -> float:
        return self.now


class Requests:
    """The request quota alone, each check answering its one decision."""

    def __init__(self, redis: RedisClient, clock: Clock, limit: int, window: int) -> None:
        self.limiter = Quotas(redis, defaults=Limits(requests=limit),
                                            window_seconds=window, clock=clock)  # fmt: skip

    @property
    def failures(self) -> int:
        return self.limiter.failures

    async def check(self, client: str) -> Decision:
        (decision,) = (await self.limiter.check(client)).decisions
        return decision


def limiter(redis: RedisClient, clock: Clock, limit: int = 3, window: int = 60) -> Requests:
    return Requests(redis, clock, limit, window)


def quotas(redis: RedisClient, clock: Clock, limits: Limits) -> Quotas:
    return Quotas(redis, defaults=limits, window_seconds=60,
                                token_window_seconds=100, clock=clock)  # fmt: skip


def someone() -> str:
    return f"198.51.100.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"


async def test_admits_the_limit_then_refuses_without_counting(redis: RedisClient) -> None:
    clock, client = Clock(), someone()
    limit = limiter(redis, clock)
    decisions = [await limit.check(client) for _ in range(5)]
    assert [(d.allowed, d.remaining) for d in decisions] == [
        (True, 2), (True, 1), (True, 0), (False, 0), (False, 0)
    ]  # fmt: skip
    assert decisions[0].retry_after_seconds == 0  # another request fits right now
    assert decisions[2].retry_after_seconds == decisions[3].retry_after_seconds > 0


@pytest.mark.parametrize(
    "spacing_seconds",
    [
        pytest.param(0.0, id="burst"),
        pytest.param(7.3, id="spread"),
        pytest.param(15, id="across-a-boundary"),
    ],
)
async def test_waiting_retry_after_is_enough(redis: RedisClient, spacing_seconds: float) -> None:
    """Retry-After is honest: a request after that many seconds is admitted."""
    clock, client = Clock(), someone()
    limit = limiter(redis, clock)
    for _ in range(3):
        assert (await limit.check(client)).allowed
        clock.now += spacing_seconds
    refused = await limit.check(client)
    assert not refused.allowed
    clock.now += refused.retry_after_seconds
    assert (await limit.check(client)).allowed


async def test_a_flood_of_refused_requests_does_not_extend_the_block(redis: RedisClient) -> None:
    clock, client = Clock(), someone()
    limit = limiter(redis, clock)
    for _ in range(3):
        await limit.check(client)
    first_refusal = await limit.check(client)
    for _ in range(100):
        clock.now += 0.1
        await limit.check(client)
    clock.now = Clock().now + first_refusal.retry_after_seconds
    assert (await limit.check(client)).allowed


async def test_clients_are_independent(redis: RedisClient) -> None:
    clock, noisy, quiet = Clock(), someone(), someone()
    limit = limiter(redis, clock)
    for _ in range(4):
        await limit.check(noisy)
    assert await limit.check(quiet) == Decision("requests", 3, 60, True, 2, 0)


async def test_the_window_boundary_counts_the_previous_window_by_its_share(
    redis: RedisClient,
) -> None:
    """Written down in app/limiter.py: the previous window is assumed evenly spread."""
    clock, client = Clock(now=60_000 * 60 + 59), someone()  # 1 s before a boundary
    limit = limiter(redis, clock, limit=10)
    assert all([(await limit.check(client)).allowed for _ in range(10)])
    clock.now += 1  # a new window begins: the last one still counts in full
    assert not (await limit.check(client)).allowed
    clock.now += 30  # halfway: half of the previous window's 10 requests count
    admitted = [(await limit.check(client)).allowed for _ in range(10)]
    assert admitted == [True] * 5 + [False] * 5
    clock.now += 30  # a window later, only the 5 of the current (now previous) one, in full
    assert [(await limit.check(client)).allowed for _ in range(6)] == [True] * 5 + [False]


async def test_concurrent_burst_admits_exactly_the_limit(redis: RedisClient) -> None:
    """The check and the count are one atomic script: no race lets an extra request in, though
    the checks of one turn of the event loop share a single pipelined round trip."""
    clock, client = Clock(), someone()
    limit = limiter(redis, clock, limit=10)
    pipelines = count_pipelines(redis)
    decisions = await asyncio.gather(*(limit.check(client) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    assert [d.remaining for d in decisions if d.allowed] == list(range(9, -1, -1))
    assert pipelines() == 1


async def test_a_script_redis_lost_is_loaded_again(redis: RedisClient) -> None:
    """After a restart, a flush or a failover Redis answers NOSCRIPT: checks go on, counted."""
    clock, client = Clock(), someone()
    limit = limiter(redis, clock, limit=3)
    assert (await limit.check(client)).remaining == 2
    await redis.script_flush()
    decisions = await asyncio.gather(*(limit.check(client) for _ in range(3)))
    assert sorted(d.allowed for d in decisions) == [False, True, True]  # 2 left of 3


async def test_keys_share_a_hash_tag_and_expire_after_two_windows(redis: RedisClient) -> None:
    clock, client = Clock(), someone()
    await limiter(redis, clock, window=60).check(client)
    keys = [key async for key in redis.scan_iter(f"bib:rl:{{{client}}}:*")]
    assert len(keys) == 1
    assert 60 < await redis.ttl(keys[0]) <= 120


async def test_redis_down_is_redis_unavailable() -> None:
    dead = await connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    limit = limiter(dead, Clock())
    with pytest.raises(RedisUnavailable):
        await limit.check("203.0.113.1")
    assert limit.failures == 1
    await dead.aclose()


async def test_an_outage_is_not_tried_again_on_every_request() -> None:
    """While Redis is down, checks within a second of a failure fail at once, without a
    connect attempt each (a request would wait for the connect timeout before failing open)."""
    dead = await connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    limit = limiter(dead, Clock())
    for _ in range(5):
        with pytest.raises(RedisUnavailable):
            await limit.check("203.0.113.1")
    assert limit.failures == 1
    await dead.aclose()


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param("asyncio", id="asyncio"),
     pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")],  # what uvicorn runs
)  # fmt: skip
async def test_connections_closed_under_commands_are_redis_unavailable(
    redis: RedisClient,
) -> None:
    """What a node failure does to a client (a cluster client reloads the topology and closes
    its node connections): each command in flight succeeds or is ``RedisUnavailable``."""
    limit = limiter(redis, Clock(), limit=10_000)
    outcomes: list[str] = []

    async def check(client: str) -> None:
        try:
            await limit.check(client)
            outcomes.append("admitted")
        except RedisUnavailable:
            outcomes.append("unavailable")

    for round_ in range(20):
        checks = [asyncio.create_task(check(f"{someone()}-{i}")) for i in range(30)]
        for _ in range(round_ % 5):  # closed at each step of connecting and sending
            await asyncio.sleep(0)
        if isinstance(redis, RedisCluster):
            await redis.nodes_manager.aclose()
        else:
            await redis.connection_pool.disconnect()
        await asyncio.gather(*checks)  # anything else raised fails the test here
    assert "unavailable" in outcomes, "no command was caught by the closing"
    with warnings.catch_warnings():  # redis-py drops, unclosed, sockets it closed under itself:
        warnings.simplefilter("ignore", ResourceWarning)  # collected here, not in a later test
        gc.collect()


async def test_a_token_budget_refuses_once_spent_until_its_window_forgives(
    redis: RedisClient,
) -> None:
    """Tokens are charged when a generation ends, so one can overdraw; then every request is
    refused until the estimate is under the budget again, and Retry-After says when."""
    clock, client = Clock(now=1_000_000.0), someone()  # the start of a 100 s token window
    limit = quotas(redis, clock, Limits(requests=100, tokens=100))
    first = await limit.check(client)
    assert [(d.quota, d.remaining) for d in first.decisions] == [("requests", 99),
                                                                 ("tokens", 100)]  # fmt: skip
    assert first.account is not None
    await first.account.settle(150)  # one long generation
    refused = await limit.check(client)
    assert refused.account is None
    assert [(d.quota, d.allowed) for d in refused.decisions] == [("requests", True),
                                                                 ("tokens", False)]  # fmt: skip
    assert refused.decisions[0].remaining == 99  # a refused request is not counted
    tokens = refused.decisions[1]
    # the next window, until 150 * (1 - share) <= 99: 100 + 34 s
    assert tokens.retry_after_seconds == 134
    clock.now += tokens.retry_after_seconds - 1
    assert not (await limit.check(client)).allowed
    clock.now += 1
    assert (await limit.check(client)).allowed


async def test_a_concurrency_cap_holds_slots_until_given_back_or_their_lease_ends(
    redis: RedisClient,
) -> None:
    clock, client = Clock(), someone()
    limit = quotas(redis, clock, Limits(requests=100, concurrency=2))
    one, two = await limit.check(client), await limit.check(client)
    assert one.account is not None
    assert two.account is not None
    refused = await limit.check(client)
    assert refused.account is None
    assert refused.decisions[1] == Decision("concurrency", 2, 0, False, 0, 1)
    assert refused.decisions[0].remaining == 98  # not counted
    one.account.release()
    await asyncio.sleep(0.01)  # a posted release rides the next round trip
    three = await limit.check(client)
    assert three.account is not None
    assert not (await limit.check(client)).allowed
    clock.now += 6  # past the lease: a dead worker's tickets expire
    assert (await limit.check(client)).allowed
    assert 0 < await redis.ttl(keys.running(client)) <= 5


async def test_a_generations_renewals_keep_its_ticket(redis: RedisClient) -> None:
    limit = quotas(redis, Clock(now=time.time()), Limits(concurrency=1))
    held = (await limit.check(someone())).account
    assert held is not None
    assert held.lease is not None
    running, ticket = held.lease
    store = RedisStore(redis, redis)
    meta = Meta("0" * 64, "generate", "llama3.2")
    renewal = Renewal(
        "g_test", meta, 60, False, describe=False, count=False, concurrency_ticket=held.lease
    )
    before = await redis.zscore(running, ticket)
    await asyncio.sleep(0.2)
    await store.renew([renewal])
    after = await redis.zscore(running, ticket)
    assert before is not None
    assert after is not None
    assert after >= before + 0.2
    await held.settle(0)
    await store.renew([renewal])  # a renewal late for the end
    assert await redis.zscore(running, ticket) is None  # given back stays given back


async def test_only_counted_tokens_are_charged(redis: RedisClient) -> None:
    clock, client = Clock(), someone()
    account = (await quotas(redis, clock, Limits(requests=5)).check(client)).account
    assert account is not None
    await account.settle(1000)
    assert [key async for key in redis.scan_iter(f"bib:rl:{{{client}}}:tokens:*")] == []


@pytest.mark.parametrize(
    ("host", "key"),
    [
        pytest.param("203.0.113.7", "203.0.113.7", id="ipv4"),
        pytest.param("::ffff:203.0.113.7", "203.0.113.7", id="ipv4-mapped"),
        pytest.param("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64", id="ipv6-64"),
        pytest.param("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64", id="same-64"),
        pytest.param("2001:db8:1:3::1", "2001:db8:1:3::/64", id="other-64"),
        pytest.param(None, "unknown", id="no-peer"),
        pytest.param("unix-socket", "unix-socket", id="not-an-address"),
    ],
)
def test_client_key(host: str | None, key: str) -> None:
    assert client_key(host) == key
