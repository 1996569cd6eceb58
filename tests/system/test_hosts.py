"""Several Ollama hosts (simulators): least-busy routing across replicas, ejection, retry,
models per host, readiness and what health and metrics say of each host."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from harness import servers
from harness.servers import Server, simulator_counters
from tests.support import sse
from tests.support.bodies import GENERATE, slow, unique
from tests.support.sse import fetch_from
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.system]


def in_flight(host: Server) -> int:
    return servers.in_flight(simulator_counters(host))


@pytest.fixture
def start_hosts() -> Iterator[Callable[..., list[Server]]]:
    started: list[Server] = []

    def start(count: int, *args: str) -> list[Server]:
        hosts = [servers.simulator("--tokens", "12", "--token-delay", "0.01", *args).start()
                 for _ in range(count)]  # fmt: skip
        started.extend(hosts)
        return hosts

    yield start
    for host in started:
        host.stop()


def urls(*hosts: Server | str) -> str:
    return ",".join(h if isinstance(h, str) else h.url for h in hosts)


async def health(service: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        body: dict[str, Any] = (await http.get("/v1/health")).json()
    return body


async def test_each_generation_goes_to_the_least_busy_host_whichever_replica_asks(
    start_service: Callable[..., Server], start_hosts: Callable[..., list[Server]]
) -> None:
    """Counted per process, the second replica would pick at random among three idle-looking
    hosts; counted in Redis it must pick the one host the first replica left idle, each round."""
    hosts = start_hosts(3)
    first = start_service(OLLAMA_HOSTS=urls(*hosts))
    second = start_service(OLLAMA_HOSTS=urls(*hosts))
    streams = []
    for round_ in range(1, 4):
        for replica in (first, first, second):
            body = slow(unique("spread"), tokens=60, delay=0.1)
            streams.append(asyncio.create_task(fetch_from(replica, "POST", GENERATE, json=body)))
            await wait_for(lambda: sum(map(in_flight, hosts)) == len(streams), 10)
        assert [in_flight(h) for h in hosts] == [round_] * 3
        shared = [h["in_flight"] for h in (await health(second))["ollama_hosts"]]
        assert shared == [round_] * 3  # the counts in Redis, as /v1/health reports them
    assert [r.events()[-1].type for r in await asyncio.gather(*streams)] == ["done"] * 9


async def test_a_failing_or_dead_host_is_ejected_and_requests_retried_elsewhere(
    start_service: Callable[..., Server], start_hosts: Callable[..., list[Server]]
) -> None:
    (good,) = start_hosts(1)
    (failing,) = start_hosts(1, "--fault", "500", "--fault-after", "0")
    dead = f"http://127.0.0.1:{servers.free_port()}"
    service = start_service(OLLAMA_HOSTS=urls(failing, dead, good), OLLAMA_EJECT_SECONDS="30")
    # Ties between hosts go at random, so six requests missed the failing host about once in 64
    # runs (then nothing ejected it, and the test failed): ask until it has been tried.
    sent = 0
    while sent < 6 or (simulator_counters(failing)["started"] == 0 and sent < 40):
        answer = await fetch_from(service, "POST", GENERATE, json={"prompt": unique("retried")})
        assert answer.events()[-1].type == "done"
        sent += 1
    assert simulator_counters(good)["completed"] == sent
    assert simulator_counters(failing)["started"] == 1  # ejected after its first 500
    states = {h["url"]: h for h in (await health(service))["ollama_hosts"]}
    assert states[good.url]["state"] == "serving"
    assert states[failing.url]["state"] == states[dead]["state"] == "ejected"
    assert states[failing.url]["errors"] >= 1
    async with httpx.AsyncClient(base_url=service.url) as http:
        metrics = (await http.get("/metrics")).text
    assert f'bib_ollama_host_up{{host="{dead}"}} 0.0' in metrics
    assert f'bib_ollama_host_up{{host="{good.url}"}} 1.0' in metrics


async def test_an_ejected_host_comes_back_after_its_cool_down(
    start_service: Callable[..., Server], start_hosts: Callable[..., list[Server]]
) -> None:
    (good,) = start_hosts(1)
    later = servers.simulator("--tokens", "3")  # its port is chosen, but nothing listens yet
    service = start_service(OLLAMA_HOSTS=urls(good, later.url), OLLAMA_EJECT_SECONDS="0.5")
    try:
        states = {h["url"]: h["state"] for h in (await health(service))["ollama_hosts"]}
        assert states[later.url] == "ejected"
        later.start()
        await until_state(service, later.url, "serving", seconds=5)
    finally:
        later.stop()


async def until_state(service: Server, url: str, state: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        states = {h["url"]: h["state"] for h in (await health(service))["ollama_hosts"]}
        if states[url] == state:
            return
        assert time.monotonic() < deadline, f"{url} is still {states[url]}"
        await asyncio.sleep(0.1)


async def test_a_model_goes_only_to_hosts_that_have_it(
    start_service: Callable[..., Server], start_hosts: Callable[..., list[Server]]
) -> None:
    (llama,) = start_hosts(1, "--models", "llama3.2")
    (qwen,) = start_hosts(1, "--models", "qwen3")
    service = start_service(OLLAMA_HOSTS=urls(llama, qwen))
    for _ in range(4):
        body = {"prompt": unique("qwen"), "model": "qwen3"}
        assert (await fetch_from(service, "POST", GENERATE, json=body)).events()[-1].type == "done"
    assert (simulator_counters(llama)["started"], simulator_counters(qwen)["started"]) == (0, 4)
    nobody = await fetch_from(service, "POST", GENERATE, json={"prompt": "x", "model": "mistral"})
    assert (nobody.status, nobody.json()["error"]) == (404, "model_not_found")
    async with httpx.AsyncClient(base_url=service.url) as http:
        names = {m["name"] for m in (await http.get("/v1/models")).json()["models"]}
    assert names == {"llama3.2:latest", "qwen3:latest"}


async def test_a_host_killed_mid_stream_loses_only_its_own_generations(
    start_service: Callable[..., Server], start_hosts: Callable[..., list[Server]]
) -> None:
    doomed, survivor = start_hosts(2)
    service = start_service(OLLAMA_HOSTS=urls(doomed, survivor))
    streams = [
        asyncio.create_task(fetch_from(service, "POST", GENERATE, json=slow(unique("kill"), 30)))
        for _ in range(4)
    ]
    await wait_for(lambda: (in_flight(doomed), in_flight(survivor)) == (2, 2), 10)
    assert doomed.process is not None
    doomed.process.kill()
    ends = sorted(sse_end(received) for received in await asyncio.gather(*streams))
    assert ends == ["done", "done", "error:upstream_error", "error:upstream_error"]
    for _ in range(3):  # at once, and without a retry: the host is already ejected
        answer = await fetch_from(service, "POST", GENERATE, json={"prompt": unique("after")})
        assert answer.events()[-1].type == "done"
    assert simulator_counters(survivor)["completed"] == 2 + 3


def sse_end(received: sse.Received) -> str:
    last = received.events()[-1]
    return last.type if last.type == "done" else f"{last.type}:{last.json()['error']}"


async def test_ready_while_one_host_serves(
    start_service: Callable[..., Server], start_hosts: Callable[..., list[Server]]
) -> None:
    up, down = start_hosts(2)
    service = start_service(OLLAMA_HOSTS=urls(up, down))
    down.stop()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        await asyncio.sleep(1.1)  # past the cached check
        assert (await http.get("/readyz")).status_code == 200
        up.stop()
        await asyncio.sleep(1.1)
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert "no Ollama host is serving" in ready.text
