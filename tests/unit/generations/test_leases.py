"""The worker's lease loop (``app.generations.leases``) against a real Valkey, one node and a
cluster: the generations due at one batch time are renewed in one round trip, each as often as it
asks, until it has ended; a failed round trip is each one's to retry."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest

from app.generations.generation import new_generation_id
from app.generations.leases import Leases
from app.store import keys
from app.store.client import connect
from app.store.generations import Meta, RedisStore, Renewal
from harness.servers import free_port
from tests.support.redis import count_pipelines

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


@dataclass(eq=False)
class Leased:
    """A generation as the loop sees it; ``every`` is how often it asks to be renewed."""

    every: float = 10.0
    ended: bool = False
    id: str = field(default_factory=new_generation_id)
    outcomes: list[int | None] = field(default_factory=list)

    def renewal(self) -> Renewal:
        meta = Meta(uuid.uuid4().hex * 2, "generate", "m")
        return Renewal(self.id, meta, 60, claimed=False, describe=False, count=True)

    def renewed(self, renewal: Renewal | None, counted: int | None) -> float:
        self.outcomes.append(counted)
        return self.every


async def test_generations_due_together_are_renewed_in_one_round_trip(store: RedisStore) -> None:
    leases, due = Leases(store), [Leased() for _ in range(200)]
    await store.watch(due[7].id, "elsewhere")
    pipelines = count_pipelines(store.redis)
    for leased in due:
        leases.renew_in(leased, 0)
    await asyncio.sleep(0.2)
    assert pipelines() == 1
    assert [leased.outcomes for leased in due] == [[1] if i == 7 else [0] for i in range(200)]
    assert await store.alive(due[199].id)
    assert 4000 < await store.redis.pttl(keys.generation(due[0].id, "lease")) <= 5000
    await leases.aclose()


async def test_each_is_renewed_as_often_as_it_asks_until_it_has_ended(store: RedisStore) -> None:
    leases, often, rarely = Leases(store), Leased(every=0.1), Leased(every=10)
    leases.renew_in(often, 0)
    leases.renew_in(rarely, 0)
    await asyncio.sleep(0.55)
    assert 4 <= len(often.outcomes) <= 6
    assert len(rarely.outcomes) == 1
    often.ended = True
    await asyncio.sleep(0.3)
    assert len(often.outcomes) <= 6  # no renewal once it has ended
    await leases.aclose()


async def test_a_failed_round_trip_is_each_ones_to_retry() -> None:
    dead = await connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    leases, leased = Leases(RedisStore(dead, dead)), Leased(every=0.1)
    leases.renew_in(leased, 0)
    await asyncio.sleep(0.5)
    assert leased.outcomes[:2] == [None, None]
    await leases.aclose()
    await dead.aclose()


async def test_a_renewal_asked_for_while_one_is_under_way_is_not_lost(store: RedisStore) -> None:
    """The last client here leaving asks for one at once (to count those elsewhere): it must
    not give way to the slower schedule the renewal under way then sets."""
    leases, leased = Leases(store), Leased(every=10)

    def renewed(renewal: Renewal | None, counted: int | None) -> float:
        if not leased.outcomes:
            leases.renew_in(leased, 0)  # as if the last client left during the round trip
        leased.outcomes.append(counted)
        return leased.every

    leased.renewed = renewed  # type: ignore[method-assign]
    leases.renew_in(leased, 0)
    await asyncio.sleep(0.3)
    assert len(leased.outcomes) == 2
    await leases.aclose()


async def test_a_bucket_holding_one_twice_renews_it_once_and_goes_on(store: RedisStore) -> None:
    """Asked for at 0.3 s, then sooner, then (by its renewal) at 0.3 s again: its first entry
    is stale but in the same bucket as its new one. The loop once died of it (KeyError), and
    with it every lease of the worker."""
    loop = asyncio.get_running_loop()
    leases, leased, other = Leases(store), Leased(), Leased(every=0.1)
    again = loop.time() + 0.3

    def renewed(renewal: Renewal | None, counted: int | None) -> float:
        leased.outcomes.append(counted)
        return again - loop.time() if len(leased.outcomes) == 1 else 10

    leased.renewed = renewed  # type: ignore[method-assign]
    leases.renew_in(leased, 0.3)
    leases.renew_in(leased, 0)
    leases.renew_in(other, 0)
    await asyncio.sleep(0.6)
    assert len(leased.outcomes) == 2
    assert len(other.outcomes) >= 4  # the loop went on
    await leases.aclose()


async def test_a_renewal_that_fails_with_a_bug_is_logged_and_tried_again(
    store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    leases, broken, fine = Leases(store), Leased(every=0.1), Leased(every=0.1)

    def renewed(renewal: Renewal | None, counted: int | None) -> float:
        broken.outcomes.append(counted)
        if len(broken.outcomes) == 1:
            raise ValueError("a bug")
        return broken.every

    broken.renewed = renewed  # type: ignore[method-assign]
    leases.renew_in(broken, 0)
    leases.renew_in(fine, 0)
    await asyncio.sleep(1.5)
    assert "ValueError: a bug" in caplog.text
    assert len(broken.outcomes) >= 2  # tried again a second later, and on from there
    assert len(fine.outcomes) >= 2
    await leases.aclose()
