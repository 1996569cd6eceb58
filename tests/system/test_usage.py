"""A key's usage over real sockets and two replicas: whatever replica answered, either one's
``GET /v1/usage`` and ``python -m app keys usage`` say what the key used, with the tokens the
simulator counted it generated and the hits and joins counted apart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from harness import servers
from harness.servers import Server
from tests.support import sse
from tests.support.bodies import GENERATE, slow, unique
from tests.support.keys import keys_command as keys
from tests.support.keys import made_key as made

pytestmark = [pytest.mark.anyio, pytest.mark.system]

LIMIT = 8  # the key's requests per hour: the answers below, then refusals


@pytest.fixture
def counting() -> Iterator[Server]:
    """A simulator of this test's own, so that its counters count this test alone."""
    server = servers.simulator("--tokens", "12", "--token-delay", "0.01").start()
    yield server
    server.stop()


async def counters(http: httpx.AsyncClient, simulator: Server) -> dict[str, Any]:
    found: dict[str, Any] = (await http.get(simulator.url + "/_sim/counters")).json()
    return found


async def usage_of(http: httpx.AsyncClient, server: Server, totals: dict[str, int]
                   ) -> dict[str, Any]:  # fmt: skip
    """The key's usage on ``server`` once its totals are ``totals`` (a request's counts are
    summed in the worker, sent within ``usage.FLUSH_SECONDS``), or as it is after three
    seconds."""
    deadline = time.monotonic() + 3
    while True:
        answer = await http.get(server.url + "/v1/usage")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["totals"] == totals or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_usage_equals_what_the_simulator_counted_on_either_replica(
    start_service: Callable[..., Server], redis_url: str, counting: Server
) -> None:
    env = {"AUTH": "required", "OLLAMA_HOST": counting.url, "RATE_LIMIT_WINDOW": "3600"}
    one, other = start_service(**env), start_service(**env)
    key = made(redis_url, "usage-alice", "--rate-limit", str(LIMIT))
    prompt, join = unique("usage"), slow(unique("usage join"), delay=0.1)
    embedded = {"model": "llama3.2", "input": ["one two", "three"]}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        streamed = await sse.fetch(http, "POST", one.url + GENERATE, json={"prompt": prompt})
        asked = [{"role": "user", "content": unique("usage")}]
        chat = await http.post(other.url + "/v1/chat/completions",
                               json={"model": "qwen3", "messages": asked})  # fmt: skip
        hit = await http.post(other.url + GENERATE, json={"prompt": prompt, "stream": False})
        leader = asyncio.create_task(sse.fetch(http, "POST", one.url + GENERATE, json=join))
        for _ in range(500):  # until it has begun, holding the claim: then join it
            if (await counters(http, counting))["started"] == 3:
                break
            await asyncio.sleep(0.01)
        joined = await http.post(other.url + GENERATE, json={**join, "stream": False})
        led = await leader
        embeddings = [await http.post(server.url + "/api/embed", json=embedded)
                      for server in (one, other)]  # fmt: skip
        cached = [streamed.headers["x-cache"], chat.headers["x-cache"], hit.headers["x-cache"],
                  led.headers["x-cache"], joined.headers["x-cache"],
                  *(e.headers["x-cache"] for e in embeddings)]  # fmt: skip
        assert cached == ["MISS", "MISS", "HIT", "MISS", "JOINED", "MISS", "HIT"]
        for turn in range(LIMIT):  # hits until the key's quota refuses one
            again = await http.post((one, other)[turn % 2].url + GENERATE, json={"prompt": prompt})
            if again.status_code == 429:
                break
            cached.append(again.headers["x-cache"])
        assert again.status_code == 429
        simulated = await counters(http, counting)
        assert (simulated["started"], simulated["completed"], simulated["embedded"]) == (3, 3, 1)
        expected = {
            "requests": len(cached),
            "input_tokens": simulated["input_tokens"],
            "output_tokens": simulated["output_tokens"],
            "cache_hits": sum(answer in ("HIT", "JOINED") for answer in cached),
            "refused": 1,
        }
        assert expected["input_tokens"] == 26 * 3 + 3  # three generations, three words embedded
        for server in (one, other):
            used = await usage_of(http, server, expected)
            assert used["totals"] == expected
            assert used["by_model"]["qwen3"] == {
                "requests": 1, "input_tokens": 26, "cache_hits": 0, "refused": 0,
                "output_tokens": chat.json()["usage"]["completion_tokens"]}  # fmt: skip
            assert list(used["by_day"].values())[-1] == expected  # today, UTC
    shown = keys(redis_url, "usage", "usage-alice")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    totals = " ".join(f"{name}={count}" for name, count in expected.items())
    assert lines[0] == f"usage-alice\tall\t{totals}"
    assert [line.split("\t")[1] for line in lines[1:3]] == ["model=llama3.2", "model=qwen3"]
    assert len([line for line in lines if "\tday=" in line]) == 7  # the last seven days
    assert f"usage-alice\tall\t{totals}" in keys(redis_url, "usage").stdout.splitlines()
    unknown = keys(redis_url, "usage", "nobody")
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "error: no key named 'nobody'")
    malformed = keys(redis_url, "usage", "usage-alice", "--start", "monday")
    assert malformed.returncode == 1
    assert malformed.stderr.strip() == "error: --start must be a date, YYYY-MM-DD"
