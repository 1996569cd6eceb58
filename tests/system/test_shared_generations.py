"""Generations shared through Redis: cache replay, joining, resume, stop, resources.

Everything runs over real sockets against real app processes, Valkey and the simulator; the
simulator's counters prove how many upstream generations each scenario cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.generations.cache import content_hash
from app.generations.request import parse_body
from harness import servers
from harness.servers import Server, simulator_counters
from tests.support import sse
from tests.support.bodies import GENERATE, slow, unique
from tests.support.sse import fetch_from, tokens_of

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.system]


@pytest.fixture(scope="module")
def replicas(service_env: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    """Two separate app processes (replicas) on one Redis, with a 2 s resume grace."""
    env = {**service_env, "RESUME_GRACE": "2"}
    first = servers.app(env).start("/livez")
    second = servers.app(env).start("/livez")
    yield first, second
    first.stop()
    second.stop()


async def test_hit_after_miss_replays_without_ollama(service: Server, simulator: Server) -> None:
    """The second identical request is a cache hit: same tokens, cached true, no upstream call."""
    body = {"prompt": unique("cache me")}
    miss = await fetch_from(service, "POST", GENERATE, json=body)
    before = simulator_counters(simulator)["started"]
    hit = await fetch_from(service, "POST", GENERATE, json=body)
    assert simulator_counters(simulator)["started"] == before
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    start, *_, done = hit.events()
    assert start.json()["cached"] is True
    assert done.json()["cached"] is True
    assert start.json()["generation"] == miss.events()[0].json()["generation"]
    assert [(e.data, e.last_event_id) for e in tokens_of(hit)] == [
        (e.data, e.last_event_id) for e in tokens_of(miss)
    ]
    assert {k: v for k, v in done.json().items() if k != "cached"} == {
        k: v for k, v in miss.events()[-1].json().items() if k != "cached"
    }
    as_json = await fetch_from(service, "POST", GENERATE, json={**body, "stream": False})
    assert as_json.headers["x-cache"] == "HIT"
    assert as_json.json()["response"] == sse.text_of(miss.body)
    assert as_json.json()["cached"] is True


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"options": {"seed": 7}}, id="option"),
        pytest.param({"system": "be terse"}, id="system"),
        pytest.param({"model": "qwen3"}, id="model"),
        pytest.param({"prompt": None, "messages": [{"role": "user", "content": "x"}]}, id="chat"),
    ],
)
async def test_changed_content_is_a_miss(
    service: Server, simulator: Server, change: dict[str, Any]
) -> None:
    body = {"prompt": unique("base")}
    await fetch_from(service, "POST", GENERATE, json=body)
    changed = {k: v for k, v in {**body, **change}.items() if v is not None}
    before = simulator_counters(simulator)["started"]
    received = await fetch_from(service, "POST", GENERATE, json=changed)
    assert received.headers["x-cache"] == "MISS"
    assert simulator_counters(simulator)["started"] == before + 1


async def test_cache_false_neither_reads_nor_writes(service: Server, simulator: Server) -> None:
    body = {"prompt": unique("private"), "cache": False}
    before = simulator_counters(simulator)["started"]
    first = await fetch_from(service, "POST", GENERATE, json=body)
    second = await fetch_from(service, "GET", GENERATE, params={**body, "cache": "false"})
    third = await fetch_from(service, "POST", GENERATE, json={"prompt": body["prompt"]})
    assert [r.headers["x-cache"] for r in (first, second, third)] == ["BYPASS", "BYPASS", "MISS"]
    assert simulator_counters(simulator)["started"] == before + 3


async def test_a_failed_generation_is_never_cached(service: Server, simulator: Server) -> None:
    body = {"prompt": unique("fails"), "options": {"sim_fault": "error", "sim_fault_after": 3}}
    before = simulator_counters(simulator)["started"]
    for _ in range(2):
        received = await fetch_from(service, "POST", GENERATE, json=body)
        assert received.headers["x-cache"] == "MISS"
        assert received.events()[-1].type == "error"
    assert simulator_counters(simulator)["started"] == before + 2


async def test_completions_over_cache_max_bytes_are_not_cached(
    start_service: Callable[..., Server], simulator: Server
) -> None:
    service = start_service(CACHE_MAX_BYTES="200")
    body = {"prompt": unique("big"), "options": {"sim_tokens": 30, "sim_token_delay": 0}}
    first = await fetch_from(service, "POST", GENERATE, json=body)
    second = await fetch_from(service, "POST", GENERATE, json=body)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "MISS")


async def concurrent_identical(targets: list[Server], count: int, body: dict[str, Any]
                               ) -> list[sse.Received]:  # fmt: skip
    return list(
        await asyncio.gather(
            *(
                fetch_from(targets[i % len(targets)], "POST", GENERATE, json=body)
                for i in range(count)
            )
        )
    )


async def assert_one_generation_for_all(
    simulator: Server, targets: list[Server], count: int = 20
) -> None:
    body = slow(unique("together"))
    before = simulator_counters(simulator)["started"]
    responses = await concurrent_identical(targets, count, body)
    assert simulator_counters(simulator)["started"] == before + 1
    assert sorted(r.headers["x-cache"] for r in responses) == ["JOINED"] * (count - 1) + ["MISS"]
    # identical event sequences (pings, being comments, may fall anywhere)
    assert len({tuple(r.events()) for r in responses}) == 1
    assert [e.type for e in responses[0].events()] == ["start", *["token"] * 12, "done"]


async def test_identical_concurrent_requests_share_one_generation(
    service: Server, simulator: Server
) -> None:
    await assert_one_generation_for_all(simulator, [service])


async def test_joining_works_across_four_workers(
    start_service: Callable[..., Server], simulator: Server
) -> None:
    await assert_one_generation_for_all(simulator, [start_service(WEB_CONCURRENCY="4")])


async def test_joining_works_across_replicas(
    replicas: tuple[Server, Server], simulator: Server
) -> None:
    await assert_one_generation_for_all(simulator, list(replicas))


async def test_a_completion_cached_by_one_replica_is_a_hit_on_the_other(
    replicas: tuple[Server, Server], simulator: Server
) -> None:
    first, second = replicas
    body = {"prompt": unique("cached elsewhere")}
    written = await fetch_from(first, "POST", GENERATE, json=body)
    before = simulator_counters(simulator)["started"]
    hit = await fetch_from(second, "POST", GENERATE, json=body)
    assert (written.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert sse.text_of(hit.body) == sse.text_of(written.body)
    assert simulator_counters(simulator)["started"] == before


async def test_reconnect_resumes_exactly_on_another_replica(
    replicas: tuple[Server, Server], simulator: Server
) -> None:
    """Hang up after a few tokens, reconnect elsewhere with Last-Event-ID: the exact rest."""
    first, second = replicas
    body = slow(unique("resume"), tokens=20, delay=0.05)
    before = simulator_counters(simulator)
    partial = await fetch_from(first, "POST", GENERATE, json=body, stop_after=b".4\nevent: token")
    last = tokens_of(partial)[-1].last_event_id
    rest = await fetch_from(second, "POST", GENERATE, json=body, headers={"Last-Event-ID": last})
    assert rest.status == 200
    resumed = rest.events()
    assert resumed[0].last_event_id == f"{last.split('.')[0]}.{int(last.split('.')[1]) + 1}"
    assert resumed[-1].type == "done"
    assert "start" not in [e.type for e in resumed]
    whole = tokens_of(partial) + [e for e in resumed if e.type == "token"]
    assert [e.last_event_id.split(".")[1] for e in whole] == [str(n) for n in range(20)]
    after = simulator_counters(simulator)
    assert after["started"] == before["started"] + 1
    assert after["cancelled"] == before["cancelled"]
    replay = await fetch_from(second, "POST", GENERATE, json=body)  # now a cache hit
    assert "".join(e.json()["text"] for e in whole) == sse.text_of(replay.body)


async def test_resume_of_a_cached_generation_and_of_done(
    replicas: tuple[Server, Server],
) -> None:
    first, second = replicas
    body = {"prompt": unique("finished")}
    whole = await fetch_from(first, "POST", GENERATE, json=body)
    generation = whole.events()[0].json()["generation"]
    rest = await fetch_from(second, "POST", GENERATE, json=body,
                       headers={"Last-Event-ID": f"{generation}.9"})  # fmt: skip
    assert [e.last_event_id for e in rest.events()] == [
        f"{generation}.10", f"{generation}.11", f"{generation}.done"
    ]  # fmt: skip
    for suffix in ("done", "error"):
        finished = await fetch_from(first, "POST", GENERATE, json=body,
                               headers={"Last-Event-ID": f"{generation}.{suffix}"})  # fmt: skip
        assert (finished.status, finished.body) == (204, b"")


@pytest.mark.parametrize(
    ("last_event_id", "reset"),
    [
        pytest.param("g_AAAAAAAAAAAAAAAAAAAAAA.3", True, id="unknown-generation"),
        pytest.param("g_AAAAAAAAAAAAAAAAAAAAAA.99999999999", False, id="huge-index"),
        pytest.param("garbage", False, id="garbage"),
        pytest.param("x" * 8000, False, id="oversized"),
    ],
)
async def test_unusable_last_event_id_starts_afresh(
    service: Server, last_event_id: str, reset: bool
) -> None:
    body = {"prompt": unique("fresh")}
    received = await fetch_from(service, "POST", GENERATE, json=body,
                           headers={"Last-Event-ID": last_event_id})  # fmt: skip
    assert received.status == 200
    start = received.events()[0].json()
    assert start.get("reset", False) is reset
    assert received.events()[-1].type == "done"


async def test_last_event_id_of_other_content_does_not_leak_it(service: Server) -> None:
    """Resuming needs the same request: another prompt cannot read a generation by its id."""
    secret = await fetch_from(service, "POST", GENERATE, json={"prompt": unique("secret")})
    generation = secret.events()[0].json()["generation"]
    other = await fetch_from(service, "POST", GENERATE, json={"prompt": unique("other")},
                        headers={"Last-Event-ID": f"{generation}.0"})  # fmt: skip
    assert other.events()[0].json()["reset"] is True
    assert other.events()[0].json()["generation"] != generation


async def test_abandoned_generation_is_cancelled_after_the_grace(
    replicas: tuple[Server, Server], simulator: Server
) -> None:
    first, _ = replicas
    before = simulator_counters(simulator)["cancelled"]
    body = slow(unique("abandoned"), tokens=200, delay=0.05)
    await fetch_from(first, "POST", GENERATE, json=body, stop_after=b".1\nevent: token")
    hung_up = time.monotonic()
    await asyncio.sleep(1.5)
    assert simulator_counters(simulator)["cancelled"] == before  # still inside RESUME_GRACE=2
    while simulator_counters(simulator)["cancelled"] == before:
        assert time.monotonic() - hung_up < 4.5, "not cancelled soon after the grace"
        await asyncio.sleep(0.05)


async def test_stop_ends_it_for_every_client_at_once(
    replicas: tuple[Server, Server], simulator: Server
) -> None:
    first, second = replicas
    body = slow(unique("stop me"), tokens=200, delay=0.05)
    before = simulator_counters(simulator)["cancelled"]
    leader = asyncio.create_task(fetch_from(first, "POST", GENERATE, json=body))
    await asyncio.sleep(0.3)
    joiner = asyncio.create_task(fetch_from(second, "POST", GENERATE, json=body))
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=second.url) as http:
        probe = await sse.fetch(http, "POST", GENERATE, json=body, stop_after=b"\nevent: start\n")
        generation = probe.events()[0].json()["generation"]
        stopped_at = time.monotonic()
        assert (await http.delete(f"/v1/chats/generations/{generation}")).status_code == 204
        unknown = await http.delete("/v1/chats/generations/g_AAAAAAAAAAAAAAAAAAAAAA")
        assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")
    for received in await asyncio.gather(leader, joiner):
        assert received.headers["x-cache"] in ("MISS", "JOINED")
        assert received.events()[-1].json() == {"error": "cancelled",
                                                "detail": "Stopped by a client."}  # fmt: skip
    assert time.monotonic() - stopped_at < 1.0
    assert simulator_counters(simulator)["cancelled"] == before + 1


async def test_generation_resource_streams_on_another_replica(
    replicas: tuple[Server, Server], simulator: Server
) -> None:
    """POST /v1/chats/generations, then EventSource on the events URL, anywhere."""
    first, second = replicas
    messages = [{"role": "user", "content": unique("long history " * 50)}]
    async with httpx.AsyncClient(base_url=first.url) as http:
        created = await http.post("/v1/chats/generations", json={"messages": messages})
    assert created.status_code == 202
    url = created.json()["events"]
    assert created.headers["location"] == url
    assert created.json()["cached"] is False
    generation = created.json()["generation"]
    streamed = await fetch_from(second, "GET", url)
    assert streamed.headers["content-type"] == "text/event-stream; charset=utf-8"
    start, *_, done = streamed.events()
    assert start.json()["generation"] == generation
    assert done.type == "done"
    resumed = await fetch_from(first, "GET", url, headers={"Last-Event-ID": f"{generation}.5"})
    assert tokens_of(resumed)[0].last_event_id == f"{generation}.6"
    assert tokens_of(resumed) == tokens_of(streamed)[6:]
    assert (await fetch_from(second, "GET", url, headers={"Last-Event-ID": f"{generation}.done"})
            ).status == 204  # fmt: skip
    async with httpx.AsyncClient(base_url=second.url) as http:
        again = await http.post("/v1/chats/generations", json={"messages": messages})
        missing = await http.get("/v1/chats/generations/g_AAAAAAAAAAAAAAAAAAAAAA/events")
    assert (again.json()["cached"], again.json()["generation"]) == (True, generation)
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


async def test_unopened_generation_resource_is_cancelled(
    replicas: tuple[Server, Server], simulator: Server
) -> None:
    first, _ = replicas
    before = simulator_counters(simulator)["cancelled"]
    async with httpx.AsyncClient(base_url=first.url) as http:
        await http.post("/v1/chats/generations", json=slow(unique("unopened"), tokens=200))
    created = time.monotonic()
    while simulator_counters(simulator)["cancelled"] == before:
        assert time.monotonic() - created < 4.5, "an unopened generation kept running"
        await asyncio.sleep(0.05)


async def test_joiners_hear_of_a_dead_leader_within_seconds(
    start_service: Callable[..., Server],
) -> None:
    """A leader's worker killed mid-generation: clients elsewhere get an error, not silence."""
    leader, follower = start_service(RESUME_GRACE="5"), start_service(RESUME_GRACE="5")
    body = slow(unique("orphan"), tokens=200, delay=0.05)
    async with httpx.AsyncClient(base_url=leader.url, timeout=30) as http:
        await sse.fetch(http, "POST", GENERATE, json=body, stop_after=b".1\nevent: token")
    joined = asyncio.create_task(fetch_from(follower, "POST", GENERATE, json=body))
    await asyncio.sleep(0.5)
    assert leader.process is not None
    leader.process.kill()
    killed = time.monotonic()
    received = await asyncio.wait_for(joined, 15)
    assert received.headers["x-cache"] == "JOINED"
    assert received.events()[-1].json() == {
        "error": "upstream_error",
        "detail": "The worker running this generation went away.",
    }
    assert time.monotonic() - killed < 8
    token = tokens_of(received)[-1].last_event_id
    again = await fetch_from(
        follower, "POST", GENERATE, json=body, headers={"Last-Event-ID": token}
    )
    assert again.events()[0].json()["reset"] is True  # that generation is gone: start afresh


async def test_every_key_expires(service: Server, redis_url: str) -> None:
    """Whatever the service writes to Redis has a TTL: nothing grows without bound."""
    await fetch_from(service, "POST", GENERATE, json={"prompt": unique("ttl")})
    await fetch_from(service, "POST", GENERATE, json={"prompt": unique("ttl"), "cache": False})
    with servers.redis_client(redis_url) as client:
        keys = list(client.scan_iter("bib:*"))
        assert keys
        assert all(client.ttl(key) > 0 for key in keys), [k for k in keys if client.ttl(k) <= 0]


async def test_redis_outage_bypasses_then_recovers(
    start_service: Callable[..., Server], simulator: Server
) -> None:
    """Redis stopped: answered uncached (BYPASS); Redis back: cached again, by itself."""
    valkey = servers.valkey().start(ready_path=None)
    try:
        service = start_service(REDIS_URL=f"redis://127.0.0.1:{valkey.port}/0")
        body = {"prompt": unique("outage")}
        assert (await fetch_from(service, "POST", GENERATE, json=body)).headers["x-cache"] == "MISS"
        valkey.stop()
        during = await fetch_from(service, "POST", GENERATE, json={"prompt": unique("during")})
        assert during.headers["x-cache"] == "BYPASS"
        assert during.events()[-1].type == "done"
        valkey.start(ready_path=None)
        deadline = time.monotonic() + 10
        outcome = ""
        while outcome != "HIT" and time.monotonic() < deadline:
            outcome = (await fetch_from(service, "POST", GENERATE, json=body)).headers["x-cache"]
            await asyncio.sleep(0.2)
        assert outcome == "HIT", "the service did not recover when Redis came back"
    finally:
        valkey.stop()


async def test_json_caller_joins_a_generation_on_another_replica(
    replicas: tuple[Server, Server], simulator: Server
) -> None:
    first, second = replicas
    body = slow(unique("json joiner"))
    before = simulator_counters(simulator)["started"]
    streamed = asyncio.create_task(fetch_from(first, "POST", GENERATE, json=body))
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
        joined = await http.post(GENERATE, json={**body, "stream": False})
    assert joined.headers["x-cache"] == "JOINED"
    assert joined.json()["response"] == sse.text_of((await streamed).body)
    assert joined.json()["done_reason"] == "stop"
    assert simulator_counters(simulator)["started"] == before + 1


async def test_resume_from_the_cache_once_the_events_expired(
    replicas: tuple[Server, Server], redis_url: str
) -> None:
    first, second = replicas
    body = {"prompt": unique("expired events")}
    whole = await fetch_from(first, "POST", GENERATE, json=body)
    generation = whole.events()[0].json()["generation"]
    with servers.redis_client(redis_url) as client:
        client.delete(f"bib:{{{generation}}}:events", f"bib:{{{generation}}}:lease")
    rest = await fetch_from(second, "POST", GENERATE, json=body,
                       headers={"Last-Event-ID": f"{generation}.10"})  # fmt: skip
    assert rest.headers["x-cache"] == "HIT"
    assert [e.last_event_id for e in rest.events()] == [f"{generation}.11", f"{generation}.done"]


async def test_a_corrupt_cache_entry_is_replaced(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    """Read from Redis on every hit (no local copies), a foreign entry is regenerated."""
    service = start_service(CACHE_LOCAL_SECONDS="0")
    body = {"prompt": unique("corrupt")}
    first = await fetch_from(service, "POST", GENERATE, json=body)
    sha = content_hash(parse_body(body, "llama3.2"))
    with servers.redis_client(redis_url) as client:
        client.set(f"bib:{{{sha}}}:cache", b"\x00 not an entry")
    healed = await fetch_from(service, "POST", GENERATE, json=body)
    again = await fetch_from(service, "POST", GENERATE, json=body)
    assert (healed.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert sse.text_of(again.body) == sse.text_of(first.body)
