"""The GPU queue over real sockets: a host's slots never exceeded across replicas (the
simulator counts what ran at once), a flooding client served after another's first, positions
counting down in the stream, and nobody stranded by a client that left or a worker killed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from harness import servers
from harness.servers import Server, simulator_counters
from tests.support import sse
from tests.support.bodies import slow, unique
from tests.support.keys import made_key
from tests.support.sse import fetch_from

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.system]
GENERATE = "/v1/chats/generate"


@pytest.fixture
def gpu() -> Iterator[Server]:
    """A simulator of its own: its peak of generations at once is this test's."""
    server = servers.simulator("--tokens", "10", "--token-delay", "0.05").start()
    yield server
    server.stop()


def user(name: str) -> dict[str, str]:
    return {"X-User": name}  # from 127.0.0.1, a trusted proxy in the suite's settings


def queued(received: sse.Received) -> list[int]:
    return [e.json()["position"] for e in received.events() if e.type == "queued"]


async def test_a_flooding_client_waits_behind_anothers_first_across_replicas(
    start_service: Callable[..., Server], gpu: Server
) -> None:
    settings = {"OLLAMA_HOST": gpu.url, "OLLAMA_SLOTS": "1", "IDENTITY_HEADER": "X-User",
                "RATE_LIMIT_MAX": "1000"}  # fmt: skip
    one, other = start_service(**settings), start_service(**settings)

    async def ask(server: Server, name: str) -> tuple[sse.Received, float]:
        received = await fetch_from(server, "POST", GENERATE, headers=user(name),
                                    json=slow(unique(name), tokens=10, delay=0.05))  # fmt: skip
        return received, time.monotonic()  # when it was over

    flood = [asyncio.create_task(ask(one, "alice")) for _ in range(4)]
    await asyncio.sleep(0.3)
    bob, bob_done = await ask(other, "bob")
    alice = await asyncio.gather(*flood)
    # alice's first ran, her second was in line before bob came; then bob, before her others
    assert sum(done < bob_done for _, done in alice) == 2
    assert simulator_counters(gpu)["peak_running"] == 1
    positions = queued(bob)
    assert positions
    assert positions == sorted(positions, reverse=True)  # counting down
    assert [e.type for e in bob.events()][len(positions)] == "start"  # then its turn
    assert sorted(bool(queued(received)) for received, _ in alice) == [False, True, True, True]


async def test_positions_count_down_to_the_turn_and_a_client_that_left_is_never_run(
    start_service: Callable[..., Server], gpu: Server, redis_url: str
) -> None:
    server = start_service(OLLAMA_HOST=gpu.url, OLLAMA_SLOTS="1", RESUME_GRACE="5")
    running = asyncio.create_task(
        fetch_from(server, "POST", GENERATE, json=slow(unique("first"), tokens=20, delay=0.05))
    )
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        left = await sse.fetch(http, "POST", GENERATE, json=slow(unique("gone")),
                                   stop_after=b"event: queued")  # fmt: skip
    assert queued(left) == [0]
    waiting = await fetch_from(server, "POST", GENERATE, json=slow(unique("second")))
    await running
    assert queued(waiting)[-1] == 0
    counters = simulator_counters(gpu)
    assert counters["started"] == 2  # the one that left was never sent to Ollama
    assert counters["peak_running"] == 1
    with servers.redis_client(redis_url) as client:
        queue_keys = list(client.scan_iter("bib:{hosts}:*"))
        assert queue_keys
        assert all(client.ttl(key) > 0 for key in queue_keys)  # nothing grows without bound


async def test_the_compatible_surfaces_wait_without_events(
    start_service: Callable[..., Server], gpu: Server
) -> None:
    server = start_service(OLLAMA_HOST=gpu.url, OLLAMA_SLOTS="1")
    running = asyncio.create_task(
        fetch_from(server, "POST", GENERATE, json=slow(unique("first"), tokens=20, delay=0.05))
    )
    await asyncio.sleep(0.3)
    chat = {"model": "llama3.2", "stream": True,
            "messages": [{"role": "user", "content": unique("openai")}]}  # fmt: skip
    answer = await fetch_from(server, "POST", "/v1/chat/completions", json=chat)
    assert answer.status == 200
    assert b"queued" not in answer.body
    assert answer.body.rstrip().endswith(b"data: [DONE]")
    await running


async def test_queue_limits_say_when_to_come_back(
    start_service: Callable[..., Server], gpu: Server
) -> None:
    server = start_service(OLLAMA_HOST=gpu.url, OLLAMA_SLOTS="1", QUEUE_MAX_PER_CLIENT="1",
                           QUEUE_TIMEOUT="0.5", RATE_LIMIT_MAX="1000")  # fmt: skip
    running = asyncio.create_task(
        fetch_from(server, "POST", GENERATE, json=slow(unique("first"), tokens=60, delay=0.05))
    )
    await asyncio.sleep(0.3)
    waiting = asyncio.create_task(fetch_from(server, "POST", GENERATE, json=slow(unique("w"))))
    await asyncio.sleep(0.1)
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        full = await http.post(GENERATE, json={"prompt": unique("full"), "stream": False})
    assert full.status_code == 429
    assert full.json()["quota"] == "queue"
    assert int(full.headers["retry-after"]) >= 1
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        health = (await http.get("/v1/health")).json()
        metrics = (await http.get("/metrics")).text
    (host,) = health["ollama_hosts"]
    assert (host["slots"], host["in_flight"], host["queued"]) == (1, 1, 1)
    assert health["queued_by_model"] == {"llama3.2": 1}
    assert servers.sample(metrics, "bib_queue_waiting", host=gpu.url, model="llama3.2") == 1
    assert servers.sample(metrics, "bib_ollama_host_slots", host=gpu.url) == 1
    timed_out = await waiting
    assert timed_out.events()[-1].type == "error"
    assert timed_out.events()[-1].json()["error"] == "queue_timeout"
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        refused = await http.post(GENERATE, json={"prompt": unique("json"), "stream": False})
    assert refused.status_code == 503
    assert refused.json()["error"] == "queue_timeout"
    assert int(refused.headers["retry-after"]) >= 1
    await running
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        metrics = (await http.get("/metrics")).text
    assert servers.sample(metrics, "bib_queue_waiting", host=gpu.url, model="llama3.2") == 0
    assert servers.sample(metrics, "bib_rate_limited_total", quota="queue") == 1


async def test_a_killed_workers_slot_and_queued_entry_strand_nobody(
    start_service: Callable[..., Server], gpu: Server
) -> None:
    settings = {"OLLAMA_HOST": gpu.url, "OLLAMA_SLOTS": "1", "RESUME_GRACE": "30"}
    doomed, survivor = start_service(**settings), start_service(**settings)
    async with httpx.AsyncClient(base_url=doomed.url, timeout=30) as http:
        await sse.fetch(http, "POST", GENERATE, stop_after=b"event: token",
                            json=slow(unique("holding"), tokens=600, delay=0.05))  # fmt: skip
        # a generation nobody follows yet (a page's POST): it waits in line, under the grace
        assert (await http.post("/v1/chats/generations", json=slow(unique("queued")))
                ).status_code == 202  # fmt: skip
    assert doomed.process is not None
    doomed.process.kill()  # its generation's slot and its waiter's entry stop being renewed
    killed = time.monotonic()
    after = await fetch_from(survivor, "POST", GENERATE, json=slow(unique("after")))
    assert after.events()[-1].type == "done"
    assert time.monotonic() - killed < 15  # within the in-flight lease (10 s), and a try


async def test_a_person_goes_before_a_batch_flood_of_a_batch_key(
    start_service: Callable[..., Server], gpu: Server, redis_url: str
) -> None:
    """One slot; a key made ``--priority batch`` floods it (and cannot raise itself with
    ``X-Priority``); a person's request that comes after is served next, and ``/v1/health``
    and ``/metrics`` count the batch waiting."""
    nightly = made_key(redis_url, unique("nightly").replace(" ", "-"), "--priority", "batch")
    server = start_service(OLLAMA_HOST=gpu.url, OLLAMA_SLOTS="1", AUTH="optional",
                           RATE_LIMIT_MAX="1000")  # fmt: skip
    order: list[str] = []

    async def ask(name: str, headers: dict[str, str]) -> None:
        await fetch_from(server, "POST", GENERATE, headers=headers,
                         json=slow(unique(name), tokens=10, delay=0.05))  # fmt: skip
        order.append(name)

    batch = {"Authorization": f"Bearer {nightly}", "X-Priority": "interactive"}
    flood = [asyncio.create_task(ask(f"batch{n}", batch)) for n in range(4)]
    await asyncio.sleep(0.4)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        health = (await http.get("/v1/health")).json()
        metrics = (await http.get("/metrics")).text
    assert health["queued_by_band"] == {"interactive": 0, "batch": 3}
    assert 'bib_queue_waiting_band{band="batch"} 3.0' in metrics
    await ask("person", {})
    await asyncio.gather(*flood)
    assert order.index("person") == 1  # after the one running when it came


async def test_service_tier_flex_waits_in_the_batch_band(
    start_service: Callable[..., Server], gpu: Server
) -> None:
    """OpenAI's ``service_tier: "flex"`` lowers a request to the batch band: a later
    request of the same client without it is served first."""
    server = start_service(OLLAMA_HOST=gpu.url, OLLAMA_SLOTS="1", RATE_LIMIT_MAX="1000")
    order: list[str] = []

    async def ask(name: str, **extra: str) -> None:
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": unique(name)}],
                "options": {"sim_tokens": 10, "sim_token_delay": 0.05}, **extra}  # fmt: skip
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        order.append(name)

    running = asyncio.create_task(ask("running"))
    await asyncio.sleep(0.2)
    flex = asyncio.create_task(ask("flex", service_tier="flex"))
    await asyncio.sleep(0.2)
    await asyncio.gather(running, ask("default", service_tier="default"), flex)
    assert order == ["running", "default", "flex"]
