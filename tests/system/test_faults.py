"""Faults, with the service still answering afterwards and nothing wrong in the cache."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from harness import servers
from harness.servers import Server, simulator_counters
from tests.support import sse
from tests.support.bodies import slow
from tests.support.settings import SERVICE_ENV
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.system]

GENERATE = "/v1/chats/generate"


async def test_a_client_that_stops_reading_is_dropped_and_others_are_not(
    start_service: Callable[..., Server],
) -> None:
    """Megabytes into the kernel's buffers, its sends block; after SEND_TIMEOUT it is gone."""
    # outside coverage: traced, the service relays the flood too slowly to fill the buffers soon
    service = start_service(SEND_TIMEOUT="1", LOG_LEVEL="info", measured=False)
    flood = orjson.dumps({"prompt": "flood", "options": {"sim_tokens": 150_000,
                                                         "sim_token_delay": 0}})  # fmt: skip
    with socket.create_connection(("127.0.0.1", service.port)) as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(
            b"POST /v1/chats/generate HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(flood), flood)
        )
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            meanwhile = await sse.fetch(http, "POST", GENERATE, json={"prompt": "a reader"})
        assert meanwhile.events()[-1].type == "done"
        dropped = "dropped a client that read nothing for 1 s"
        await wait_for(lambda: dropped in service.output(), 20)
    service.stop()  # flushes its log
    access = [orjson.loads(x) for x in service.output().splitlines() if '"bib.access"' in x]
    (flooded,) = [a for a in access if a["tokens"] > 12]  # the reader's answer had 12 tokens
    assert flooded["tokens"] < 150_000  # cut off, not finished
    assert "Traceback" not in service.output()


async def test_a_stalled_ollama_keeps_the_stream_alive_with_pings_then_times_out(
    start_service: Callable[..., Server],
) -> None:
    service = start_service(HEARTBEAT_INTERVAL="0.3", UPSTREAM_IDLE_TIMEOUT="1.5")
    body = {"prompt": "stall", "options": {"sim_fault": "hang", "sim_fault_after": 2}}
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        received = await sse.fetch(http, "POST", GENERATE, json=body)
    items = received.items()
    last_token = max(i for i, item in enumerate(items) if getattr(item, "type", "") == "token")
    assert items[last_token + 1 :].count(sse.Comment("ping")) >= 3
    assert received.events()[-1].json()["error"] == "upstream_timeout"


@pytest.mark.parametrize(
    "hang_up_after",
    [
        pytest.param(None, id="before-the-first-byte"),
        pytest.param(b"\nevent: start\n", id="after-start"),
        pytest.param(b".0\nevent: token\n", id="after-the-first-token"),
        pytest.param(b".9\nevent: token\n", id="mid-stream"),
    ],
)
async def test_a_client_leaving_at_any_point_cancels_upstream(
    service: Server, simulator: Server, hang_up_after: bytes | None
) -> None:
    """With RESUME_GRACE=0 (the suite's), the last client leaving ends the upstream request."""
    before = simulator_counters(simulator)
    options: dict[str, Any] = {"sim_tokens": 200, "sim_token_delay": 0.05}
    if hang_up_after is None:
        options["sim_first_token_delay"] = 0.5  # leave while the service holds the response
    body = {"prompt": f"leave {hang_up_after!r}", "options": options}
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        if hang_up_after is None:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(GENERATE, json=body, timeout=0.2)
        else:
            await sse.fetch(http, "POST", GENERATE, json=body, stop_after=hang_up_after)
    await wait_for(lambda: simulator_counters(simulator)["cancelled"] > before["cancelled"], 2)
    assert simulator_counters(simulator)["completed"] == before["completed"]


async def test_redis_killed_and_restarted_mid_stream(
    start_service: Callable[..., Server], simulator: Server
) -> None:
    """The stream goes on without Redis; once Redis is back, the cache works again, and what it
    serves is the whole answer (the leader writes the end it could not write, while its claim
    would have lasted)."""
    valkey = servers.valkey().start(ready_path=None)
    try:
        service = start_service(REDIS_URL=f"redis://127.0.0.1:{valkey.port}/0")
        body = {"prompt": "redis dies", "options": {"sim_tokens": 30, "sim_token_delay": 0.05}}
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            streaming = asyncio.create_task(sse.fetch(http, "POST", GENERATE, json=body))
            await asyncio.sleep(0.5)
            assert valkey.process is not None
            valkey.process.kill()
            valkey.process.wait()
            whole = await streaming
            assert whole.headers["x-cache"] == "MISS"
            assert [e.type for e in whole.events()][-1] == "done"
            assert len([e for e in whole.events() if e.type == "token"]) == 30
            valkey.start(ready_path=None)
            outcomes = []
            for _ in range(50):
                answer = await http.post(GENERATE, json={**body, "stream": False})
                assert answer.status_code == 200, answer.text + service.output()[-3000:]
                outcomes.append(answer.headers["x-cache"])
                if outcomes[-1] == "HIT":
                    break
                await asyncio.sleep(0.2)
        assert outcomes[-1] == "HIT"
        assert answer.json()["response"] == sse.text_of(whole.body)  # nothing half-written
        assert "Traceback" not in service.output()
    finally:
        valkey.stop()


async def test_a_cluster_node_killed_and_restarted(simulator: Server) -> None:
    """A Redis Cluster loses a primary (no replica to promote): every request is still
    answered, uncached; once the node is back, caching works again by itself."""
    cluster = servers.ValkeyCluster().start()
    service = servers.app({**SERVICE_ENV, "OLLAMA_HOST": simulator.url, "REDIS_URL": cluster.url})
    try:
        service.start("/livez")
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            first = await http.post(GENERATE, json={"prompt": "node dies", "stream": False})
            assert first.headers["x-cache"] == "MISS"
            victim = cluster.nodes[1]
            assert victim.process is not None
            victim.process.kill()
            victim.process.wait()
            during = [
                await http.post(GENERATE, json={"prompt": f"node down {i}", "stream": False})
                for i in range(8)
            ]
            assert [a.status_code for a in during] == [200] * 8, service.output()
            victim.start(ready_path=None)
            outcome, deadline = "", time.monotonic() + 20
            while outcome != "HIT" and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                again = await http.post(GENERATE, json={"prompt": "node back", "stream": False})
                assert again.status_code == 200, service.output()
                outcome = again.headers["x-cache"]
            assert outcome == "HIT", "caching did not come back with the node"
        assert "Traceback" not in service.output()
    finally:
        service.stop()
        cluster.stop()


async def test_a_host_too_busy_to_list_its_models_stays_ready_while_it_streams(
    start_service: Callable[..., Server],
) -> None:
    """Issue 12: a lone host streaming 5,000 generations listed its models in more than the
    probe's 0.8 s and was ejected again and again, which flipped /readyz to 503. Slow while
    streaming is serving; slow and silent is not."""
    busy = servers.simulator("--tags-delay", "1.5").start()
    try:
        service = start_service(OLLAMA_HOST=busy.url)
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            silent = await http.get("/readyz")
            body = slow("busy", tokens=50, delay=0.1)
            streaming = asyncio.create_task(sse.fetch(http, "POST", GENERATE, json=body))
            await asyncio.sleep(0.5)  # tokens are flowing
            readiness = []
            for _ in range(3):
                await asyncio.sleep(1.1)  # past the cached check: each probe asks the host
                readiness.append((await http.get("/readyz")).status_code)
            (host,) = (await http.get("/v1/health")).json()["ollama_hosts"]
            received = await streaming
        assert silent.status_code == 503  # slow and silent: not ready
        assert readiness == [200, 200, 200]
        assert host["state"] == "serving"
        assert host["last_error"] == "no model list within 0.8 s, while streaming: slow, not down"
        assert received.events()[-1].type == "done"
    finally:
        busy.stop()


async def test_generations_after_the_engines_keep_alive_ran_out_are_answered(
    start_service: Callable[..., Server],
) -> None:
    """The engine's server (uvicorn, as vLLM's and SGLang's) closes a connection idle for 5 s.
    Kept longer here, a connection reused as it closed failed its request (a third of them,
    with aiohttp's default 15 s)."""
    service = start_service(RATE_LIMIT_MAX="0")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        for round_, idle in enumerate((0, 4.96, 4.98, 5.0, 5.02)):
            await asyncio.sleep(idle)  # about the engine's keep-alive
            answers = await asyncio.gather(*(
                http.post(GENERATE, json={"prompt": f"keep-alive {round_} {n}", "stream": False,
                                          "options": {"sim_tokens": 2, "sim_token_delay": 0}})
                for n in range(40)
            ))  # fmt: skip
            assert [a.status_code for a in answers] == [200] * 40, answers[0].text
