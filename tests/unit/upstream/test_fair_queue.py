"""The GPU queue (``app.upstream.fair_queue``) against a real Valkey, one node and a cluster: slots
never exceeded, round-robin between clients, work-conserving across hosts, and nobody stranded by a
waiter that left, timed out or died."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from app.errors import QueueTimeout, RateLimited
from app.store import keys
from app.store.client import RedisClient
from app.upstream import fair_queue as fairqueue
from app.upstream.fair_queue import FairQueue

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]
LEASE = 10.0


class Host:
    """One host's in-flight set, as ``app.upstream.hosts`` keeps it."""

    def __init__(self, redis: RedisClient, slots: int) -> None:
        self.url = f"http://gpu-{uuid.uuid4().hex[:8]}:11434"
        self.slots = slots
        self._redis = redis

    async def running(self) -> int:
        return int(await self._redis.zcard(keys.host_in_flight(self.url)))

    async def end(self, ticket: str, queue: FairQueue) -> None:
        await self._redis.zrem(keys.host_in_flight(self.url), ticket)
        queue.wake()


async def queue(redis: RedisClient, **settings: float) -> FairQueue:
    """A worker's queue whose script Redis holds already (else the first calls of one turn
    load it each on its own, in any order)."""
    options = {"max_per_client": 20, "timeout_seconds": 30.0, "batch_max_wait_seconds": 60.0,
               **settings}  # fmt: skip
    line = FairQueue(redis, max_per_client=int(options["max_per_client"]),
                     timeout_seconds=options["timeout_seconds"],
                     batch_max_wait_seconds=options["batch_max_wait_seconds"])  # fmt: skip
    await line.leave(b"nobody")
    return line


async def take(line: FairQueue, hosts: list[Host], client: str, ticket: str,
               positions: list[int] | None = None, *, band: str = "interactive",
               preferred: int | None = None, spill: int = 0) -> int:  # fmt: skip
    return await line.take(
        [h.url for h in hosts],
        [h.slots for h in hosts],
        ticket,
        LEASE,
        client=client,
        model="llama3.2",
        band=band,
        preferred=preferred,
        spill=spill,
        on_position=(positions if positions is not None else []).append,
    )


async def started(tasks: dict[str, asyncio.Task[int]]) -> set[str]:
    await asyncio.sleep(0.1)
    return {name for name, task in tasks.items() if task.done()}


async def test_one_client_flooding_waits_behind_anothers_first(redis: RedisClient) -> None:
    line, host = await queue(redis), Host(redis, slots=2)
    tasks = {f"a{i}": asyncio.create_task(take(line, [host], "alice", f"a{i}")) for i in range(6)}
    await asyncio.sleep(0.1)
    positions: list[int] = []
    tasks["b"] = asyncio.create_task(take(line, [host], "bob", "b", positions))
    assert await started(tasks) == {"a0", "a1"}
    assert positions == [1]  # alice's third is ahead of bob's first, her fourth behind it
    for ending, starting in (("a0", "a2"), ("a1", "b"), ("a2", "a3")):
        await host.end(ending, line)
        await asyncio.wait_for(tasks[starting], 2)
        assert await host.running() == 2  # never more than its slots, never a slot idle
        assert not tasks["a4"].done()
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_a_slot_never_idles_while_someone_could_use_it(redis: RedisClient) -> None:
    """An entry for a full host does not hold back one behind it for a host with a free slot."""
    line, busy, free = await queue(redis), Host(redis, slots=1), Host(redis, slots=1)
    assert await take(line, [busy], "alice", "running") == 0
    blocked = asyncio.create_task(take(line, [busy], "alice", "blocked"))
    await asyncio.sleep(0.1)
    assert await asyncio.wait_for(take(line, [busy, free], "bob", "other"), 2) == 1
    assert not blocked.done()
    await busy.end("running", line)
    assert await asyncio.wait_for(blocked, 2) == 0


async def test_leaving_cancelled_or_timed_out_strands_nobody(redis: RedisClient) -> None:
    line, host = await queue(redis, timeout_seconds=0.6), Host(redis, slots=1)
    await take(line, [host], "alice", "running")
    left = asyncio.create_task(take(line, [host], "bob", "left"))
    await asyncio.sleep(0.1)
    left.cancel()  # its client went away
    with pytest.raises(asyncio.CancelledError):
        await left
    positions: list[int] = []
    with pytest.raises(QueueTimeout) as waited:
        await take(line, [host], "carol", "late", positions)
    assert set(positions) == {0}  # nobody ahead: the one who left is gone
    assert int(waited.value.headers["Retry-After"]) >= 1
    await host.end("running", line)
    assert await asyncio.wait_for(take(line, [host], "dave", "next"), 2) == 0
    assert await redis.zcard(keys.queue()[0]) == 0


async def test_a_client_with_too_many_waiting_is_refused(redis: RedisClient) -> None:
    line, host = await queue(redis, max_per_client=2), Host(redis, slots=1)
    await take(line, [host], "alice", "running")
    waiting = [asyncio.create_task(take(line, [host], "alice", f"w{i}")) for i in range(2)]
    await asyncio.sleep(0.1)
    with pytest.raises(RateLimited) as refused:
        await take(line, [host], "alice", "third")
    assert refused.value.quota == "queue"
    assert int(refused.value.headers["Retry-After"]) >= 1
    waiting.append(asyncio.create_task(take(line, [host], "bob", "b")))  # his own count
    await asyncio.sleep(0.1)
    assert not any(task.done() for task in waiting)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_dead_workers_entries_and_slots_are_reclaimed(
    redis: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a killed worker leaves: a running slot and a queued entry nobody renews."""
    line, host = await queue(redis), Host(redis, slots=1)
    monkeypatch.setattr(fairqueue, "POLL_SECONDS", 0.1)
    names = [*keys.queue(), keys.host_in_flight(host.url)]
    dead = [host.url, 1]
    # a running generation's ticket lasts 1 s unrenewed; a waiter's entry 0.3 s
    # join's arguments: now, member, lease, ticket, its lease, preferred, spill, batch's
    # longest wait, client, model, band, most waiting, hosts
    joined = [await line._run(names, ["join", time.time(), member, 0.3, ticket, 1.0, 0, 0, 60,
                                      "x", "m", "interactive", 20, *dead])
              for member, ticket in (("slot", "t1"), ("ghost", "t2"))]  # fmt: skip
    assert [reply[0] for reply in joined] == [b"granted", b"wait"]
    positions: list[int] = []
    assert await asyncio.wait_for(take(line, [host], "y", "alive", positions), 3) == 0
    assert positions[0] == 1  # behind the ghost, until its lease ran out
    assert positions[-1] == 0  # then first, until the dead worker's slot expired


async def test_a_waiter_whose_lease_lapsed_gets_back_in_line(
    redis: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's loop stalled past a waiter's lease: its entry was reaped, and its next try
    joins again instead of waiting for an entry that is gone."""
    monkeypatch.setattr(fairqueue, "WAITER_LEASE_SECONDS", 0.2)
    monkeypatch.setattr(fairqueue, "POLL_SECONDS", 0.5)  # each try comes after the lease
    line, host = await queue(redis), Host(redis, slots=1)
    await take(line, [host], "alice", "running")
    waiting = asyncio.create_task(take(line, [host], "bob", "late"))
    await asyncio.sleep(0.8)
    assert not waiting.done()
    await redis.zrem(keys.host_in_flight(host.url), "running")  # freed, and nobody told
    assert await asyncio.wait_for(waiting, 2) == 0  # its next joining takes the slot


async def test_an_interactive_request_goes_before_a_batch_flood(redis: RedisClient) -> None:
    """One slot, a batch flood from one client, then one person's request: it is next, and its
    position says so from the start."""
    line, host = await queue(redis), Host(redis, slots=1)
    await take(line, [host], "nightly", "running", band="batch")
    tasks = {f"b{i}": asyncio.create_task(take(line, [host], "nightly", f"b{i}", band="batch"))
             for i in range(5)}  # fmt: skip
    await asyncio.sleep(0.1)
    positions: list[int] = []
    tasks["person"] = asyncio.create_task(take(line, [host], "alice", "person", positions))
    await asyncio.sleep(0.1)
    assert positions == [0]  # nothing will be served before it
    await host.end("running", line)
    assert await started(tasks) == {"person"}
    await host.end("person", line)
    assert await started(tasks) == {"person", "b0"}  # then the batch, in order
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_a_batch_waiter_is_served_under_steady_interactive_load(redis: RedisClient) -> None:
    """Interactive requests always waiting: a batch entry still goes next once it has waited
    ``QUEUE_BATCH_MAX_WAIT``, ahead of interactive entries that joined after that."""
    line, host = await queue(redis, batch_max_wait_seconds=0.3), Host(redis, slots=1)
    await take(line, [host], "alice", "running")
    batch = asyncio.create_task(take(line, [host], "nightly", "batch", band="batch"))
    waiting = [asyncio.create_task(take(line, [host], "alice", f"i{i}")) for i in range(2)]
    await asyncio.sleep(0.1)
    await host.end("running", line)
    await asyncio.sleep(0.1)
    assert waiting[0].done()  # within its wait, interactive goes first
    assert not batch.done()
    await asyncio.sleep(0.4)  # the batch entry has waited its longest
    waiting.append(asyncio.create_task(take(line, [host], "bob", "late")))
    await asyncio.sleep(0.1)
    await host.end("i0", line)
    await asyncio.wait_for(batch, 3)
    assert not waiting[1].done()
    assert not waiting[2].done()
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_free_preferred_host_is_taken_unless_markedly_busier(redis: RedisClient) -> None:
    """Affinity's choice among free hosts: the preferred one, within ``spill`` of the least
    busy; beyond it, the least busy."""
    line = await queue(redis)
    warm, cold = Host(redis, slots=4), Host(redis, slots=4)
    assert await take(line, [warm, cold], "alice", "a", preferred=0, spill=1) == 0
    assert await take(line, [warm, cold], "alice", "b", preferred=0, spill=1) == 0  # 1 vs 0
    assert await take(line, [warm, cold], "alice", "c", preferred=0, spill=1) == 1  # 2 vs 0
    assert await take(line, [warm, cold], "alice", "d", preferred=0, spill=1) == 0  # 2 vs 1
    assert (await warm.running(), await cold.running()) == (3, 1)
