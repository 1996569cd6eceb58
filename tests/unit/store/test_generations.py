"""The store against a real Valkey (and a cluster): claims, the end of a generation, meta,
events, watchers and host tickets."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.generations.generation import new_generation_id
from app.store import entries
from app.store.generations import Claim, Meta, RedisStore, Renewal
from tests.support.redis import count_pipelines

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


def sha() -> str:
    return uuid.uuid4().hex * 2


async def test_the_first_leads_the_next_join_and_after_the_end_all_hit(store: RedisStore) -> None:
    content, leader, other = sha(), new_generation_id(), new_generation_id()
    assert await store.claim(content, leader, read_cache=True) == Claim("lead", leader.encode())
    assert await store.claim(content, other, read_cache=True) == Claim("join", leader.encode())
    await store.finish(leader, content, entries.done({"eval_count": 1}), b"the entry", 60)
    hit = await store.claim(content, other, read_cache=True)
    assert (hit.outcome, hit.value) == ("hit", b"the entry")
    assert 59 < hit.ttl_seconds <= 60
    assert await store.claim(content, other, read_cache=False) == Claim("lead", other.encode())


async def test_claims_of_one_turn_share_a_round_trip_and_outlive_a_script_flush(
    store: RedisStore,
) -> None:
    content = sha()
    pipelines = count_pipelines(store.redis)
    claims = await asyncio.gather(*(store.claim(content, new_generation_id(), read_cache=True)
                                    for _ in range(20)))  # fmt: skip
    assert sorted(claim.outcome for claim in claims) == ["join"] * 19 + ["lead"]
    assert pipelines() == 1
    await store.redis.script_flush()  # Redis restarted, flushed or failed over: NOSCRIPT
    assert (await store.claim(sha(), new_generation_id(), read_cache=True)).outcome == "lead"


async def test_only_the_holder_gives_up_a_claim(store: RedisStore) -> None:
    content, holder, stranger = sha(), new_generation_id(), new_generation_id()
    await store.claim(content, holder, read_cache=False)
    await store.abandon(stranger, content)  # a slow former leader: it must not free ours
    assert (await store.claim(content, stranger, read_cache=False)).outcome == "join"
    await store.abandon(holder, content)
    assert (await store.claim(content, stranger, read_cache=False)).outcome == "lead"


async def renew(store: RedisStore, generation: str, meta: Meta, *, describe: bool, count: bool
                ) -> int:  # fmt: skip
    (counted,) = await store.renew([Renewal(generation, meta, 60, False, describe, count)])
    return counted


async def test_a_renewed_generation_is_found_by_id_with_its_watchers(store: RedisStore) -> None:
    generation, content = new_generation_id(), sha()
    meta = Meta(content, "chat", "qwen3")
    assert await store.meta(generation) is None
    assert await renew(store, generation, meta, describe=True, count=True) == 0
    assert await store.meta(generation) == meta
    assert await store.alive(generation)
    await store.watch(generation, "elsewhere")
    assert await renew(store, generation, meta, describe=True, count=True) == 1
    await store.unwatch(generation, "elsewhere")
    assert await renew(store, generation, meta, describe=True, count=True) == 0


async def test_a_lease_renewal_leaves_the_meta_and_the_count_alone(store: RedisStore) -> None:
    """What keepers send every two seconds: the lease (and claim), nothing that lasts longer."""
    generation, content = new_generation_id(), sha()
    meta = Meta(content, "chat", "qwen3")
    await store.watch(generation, "elsewhere")
    assert await renew(store, generation, meta, describe=False, count=False) == 0
    assert await store.alive(generation)
    assert await store.meta(generation) is None


async def test_renewals_of_every_kind_in_one_round_trip_each_get_their_own_count(
    store: RedisStore,
) -> None:
    ids = [new_generation_id() for _ in range(4)]
    meta = Meta(sha(), "generate", "m")
    for watched in (ids[0], ids[1], ids[3]):
        await store.watch(watched, "elsewhere")
    renewals = [
        Renewal(ids[0], meta, 60, claimed=True, describe=True, count=True),
        Renewal(ids[1], meta, 60, claimed=False, describe=False, count=False),
        Renewal(ids[2], meta, 60, claimed=True, describe=False, count=True),
        Renewal(ids[3], meta, 60, claimed=False, describe=True, count=True),
    ]
    assert await store.renew(renewals) == [1, 0, 0, 1]


async def test_events_are_read_back_in_order_after_an_id(store: RedisStore) -> None:
    generation = new_generation_id()
    await store.append(generation, entries.batch(0, [b'{"text":"a"}']), first=True)
    await store.append(generation, entries.batch(1, [b'{"text":"b"}']), first=False)
    await store.finish(generation, None, entries.done({"eval_count": 2}), None, 60)
    read = await store.read(generation, b"0", 0)
    assert [entries.decode(fields) for _, fields in read] == [
        entries.Batch(0, [b'{"text":"a"}']),
        entries.Batch(1, [b'{"text":"b"}']),
        entries.Done({"eval_count": 2}),
    ]
    assert await store.read(generation, read[0][0], 0) == read[1:]
    assert not await store.alive(generation)  # nobody renewed its lease


async def test_host_tickets_go_to_the_least_busy_host_and_come_back(store: RedisStore) -> None:
    urls = [f"http://gpu{i}-{uuid.uuid4().hex[:6]}:11434" for i in range(3)]
    picks = [await store.pick_host(urls, f"t{i}", 10) for i in range(3)]
    assert sorted(picks) == [0, 1, 2]
    assert await store.host_counts(urls) == [1, 1, 1]
    first = urls[picks[0]]
    await store.drop_host_ticket(first, "t0")
    assert await store.pick_host(urls, "t3", 10) == picks[0]
    await store.renew_host_tickets({first: ["t3"]}, 10)
    assert (await store.host_counts(urls))[picks[0]] == 1


async def test_what_an_engine_has_waiting_counts_beside_the_tickets(store: RedisStore) -> None:
    urls = [f"http://gpu{i}-{uuid.uuid4().hex[:6]}:8000" for i in range(2)]
    picks = [await store.pick_host(urls, f"t{i}", 10, waiting=[3, 0]) for i in range(3)]
    assert picks == [1, 1, 1]  # 0, 1, 2 tickets: fewer than the 3 waiting there
    assert await store.pick_host(urls, "t3", 10, waiting=[3, 0]) == 0  # 3 and 3: the first
