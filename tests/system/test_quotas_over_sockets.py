"""Token budgets and concurrency caps per identity over real sockets, shared by replicas through
Redis: charged to whoever made Ollama generate, given back however a generation ends,
a dead worker's slots back within the lease."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionUserMessageParam

from harness.servers import Server
from tests.support import sse
from tests.support.bodies import slow, unique
from tests.support.keys import made_key as made
from tests.support.sse import fetch_from

pytestmark = [pytest.mark.anyio, pytest.mark.system]
GENERATE = "/v1/chats/generate"
PROMPT_TOKENS = 26  # what the simulator says each prompt's evaluation counted


def left(response: httpx.Response | sse.Received, quota: str) -> tuple[int, int]:
    """``r`` and ``t`` of one quota's item in the ``RateLimit`` header."""
    found = re.search(rf'"{quota}";r=(\d+);t=(\d+)', response.headers["ratelimit"])
    assert found, response.headers["ratelimit"]
    return int(found[1]), int(found[2])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.cluster
async def test_one_long_generation_spends_a_budget_that_its_window_restores(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    """The leader pays what Ollama counted; a joiner and a cache hit pay nothing; over budget,
    every request is refused, and one after Retry-After is admitted."""
    server = start_service(AUTH="required", RATE_LIMIT_MAX="1000", TOKEN_LIMIT_WINDOW="2")
    alice = made(redis_url, "alice", "--token-limit", "30")
    bob = made(redis_url, "bob", "--token-limit", "30")
    long = slow(unique("long"), tokens=40, delay=0.02)
    led = asyncio.create_task(fetch_from(server, "POST", GENERATE, json=long,
                                         headers=bearer(alice)))  # fmt: skip
    await asyncio.sleep(0.3)
    joined = await fetch_from(server, "POST", GENERATE, json=long, headers=bearer(bob))
    assert joined.headers["x-cache"] == "JOINED"
    first = await led
    assert first.headers["x-cache"] == "MISS"
    assert left(first, "tokens")[0] == 30  # charged when it ends, not before
    assert '"tokens";q=30;w=2;qu="tokens"' in first.headers["ratelimit-policy"]

    http = httpx.AsyncClient(base_url=server.url, timeout=20)
    refused = await http.post(GENERATE, json={"prompt": unique("more")}, headers=bearer(alice))
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert refused.json()["quota"] == "tokens"
    assert left(refused, "tokens")[0] == 0
    wait = int(refused.headers["retry-after"])
    # 66 tokens of 30: refused for 1.1 s at least (past a boundary, 66 * (1 - share) > 29),
    # and forgiven within two 2 s windows
    assert 1 <= wait <= 4
    assert left(refused, "default")[0] == 999  # the refused request was not counted

    other = await http.post(GENERATE, json={"prompt": unique("bob")}, headers=bearer(bob))
    assert other.status_code == 200
    assert left(other, "tokens")[0] == 30  # joining cost bob nothing

    await asyncio.sleep(wait)
    hit = await http.post(GENERATE, json=long, headers=bearer(alice))
    assert hit.status_code == 200
    assert hit.headers["x-cache"] == "HIT"
    spent = await http.post(GENERATE, json={"prompt": unique("after")}, headers=bearer(alice))
    await http.aclose()
    assert spent.status_code == 200
    # the hit cost nothing: what is left only grew as the previous window's share shrank
    assert left(spent, "tokens")[0] >= left(hit, "tokens")[0] > 0


async def test_a_stopped_generation_charges_what_it_produced(
    start_service: Callable[..., Server],
) -> None:
    server = start_service(TOKEN_LIMIT_MAX="1000", RATE_LIMIT_MAX="1000")
    body = slow(unique("stopped"), tokens=200, delay=0.02)
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        started = await sse.fetch(http, "POST", GENERATE, json=body,
                                      stop_after=b".5\nevent: token")  # fmt: skip
        generation = started.headers["x-generation-id"]
        assert (await http.delete(f"/v1/chats/generations/{generation}")).status_code == 204
        await asyncio.sleep(0.3)  # its keeper settles as it ends
        after = await http.post(GENERATE, json={"prompt": unique("next"), "stream": False})
    used = 1000 - left(after, "tokens")[0]
    assert 6 <= used < 200  # the tokens it produced; Ollama counted nothing, having not finished


@pytest.mark.cluster
async def test_a_concurrency_cap_spans_replicas_and_a_dead_workers_slots_come_back(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    one = start_service(AUTH="required", RESUME_GRACE="5")
    other = start_service(AUTH="required", RESUME_GRACE="5")
    key = made(redis_url, "carol", "--concurrency", "1", "--rate-limit", "1000")
    async with httpx.AsyncClient(base_url=one.url, timeout=30) as http:
        await sse.fetch(http, "POST", GENERATE, headers=bearer(key),
                            json=slow(unique("holding"), tokens=400, delay=0.05),
                            stop_after=b".1\nevent: token")  # fmt: skip
        # the client left, but the generation runs on (RESUME_GRACE), holding the slot
        refused = await http.post(other.url + GENERATE, json={"prompt": unique("second")},
                                  headers=bearer(key))  # fmt: skip
        assert refused.status_code == 429
        assert refused.json()["quota"] == "concurrency"
        assert refused.headers["retry-after"] == "1"
        assert left(refused, "concurrency") == (0, 1)
        assert '"concurrency";q=1;qu="concurrent-requests"' in refused.headers["ratelimit-policy"]
        assert one.process is not None
        one.process.kill()
        killed = time.monotonic()
        while (answer := await http.post(other.url + GENERATE, headers=bearer(key),
                                         json={"prompt": unique("after"), "stream": False})
               ).status_code == 429:  # fmt: skip
            assert time.monotonic() - killed < 7, "a dead worker's slot outlived its lease"
            await asyncio.sleep(0.25)
        assert left(answer, "concurrency") == (0, 1)  # the one slot is its own while it runs
        again = await http.post(other.url + GENERATE, headers=bearer(key),
                                json={"prompt": unique("again"), "stream": False})  # fmt: skip
        assert again.status_code == 200  # given back as it ended


async def test_a_slot_comes_back_however_the_request_ends(
    start_service: Callable[..., Server],
) -> None:
    """Ended, cached, joined, cancelled when its client left, refused as malformed: the next
    request of the same client is admitted at once, on every surface."""
    server = start_service(CONCURRENCY_LIMIT="1", RATE_LIMIT_MAX="1000", RESUME_GRACE="0")
    asked = {"prompt": unique("cap"), "stream": False}
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        for _ in range(3):  # a miss, then hits
            assert (await http.post(GENERATE, json=asked)).status_code == 200
        assert (await http.post(GENERATE, content=b"{")).status_code == 400
        await sse.fetch(http, "POST", GENERATE, json=slow(unique("left"), tokens=200),
                            stop_after=b".1\nevent: token")  # fmt: skip
        chat = {"model": "llama3.2", "messages": [{"role": "user", "content": unique("c")}]}
        deadline = time.monotonic() + 3
        while (answer := await http.post("/v1/chat/completions", json=chat)).status_code == 429:
            assert time.monotonic() < deadline, "an abandoned generation kept its slot"
            await asyncio.sleep(0.1)
        assert answer.status_code == 200
        assert (await http.post("/api/chat", json={**chat, "stream": False})).status_code == 200


def test_every_quota_has_its_item_and_the_sdk_sees_which_refused(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    server = start_service(AUTH="optional", RATE_LIMIT_MAX="100", TOKEN_LIMIT_MAX="30",
                           CONCURRENCY_LIMIT="4")  # fmt: skip
    key = made(redis_url, "dave")
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    messages: list[ChatCompletionUserMessageParam] = [{"role": "user", "content": unique("sdk")}]
    raw = sdk.chat.completions.with_raw_response.create(model="llama3.2", messages=messages)
    assert raw.headers["ratelimit-policy"] == (
        '"default";q=100;w=60, "tokens";q=30;w=60;qu="tokens", '
        '"concurrency";q=4;qu="concurrent-requests"'
    )
    assert raw.headers["ratelimit"] == (
        '"default";r=99;t=0, "tokens";r=30;t=0, "concurrency";r=3;t=0'
    )
    with pytest.raises(openai.RateLimitError) as refused:  # 26 + 12 tokens of 30 spent
        sdk.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "x"}])
    assert refused.value.code == "rate_limited"
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["quota"] == "tokens"
    anonymous = httpx.post(
        server.url + "/api/generate",
        timeout=20,
        json={"model": "llama3.2", "prompt": unique("x"), "stream": False},
    )
    assert anonymous.status_code == 200  # its own budget: per address, not the key's


@pytest.mark.parametrize(("fail_open", "status"), [("true", 200), ("false", 503)])
def test_redis_down_applies_one_choice_to_every_quota(
    start_service: Callable[..., Server], fail_open: str, status: int
) -> None:
    server = start_service(REDIS_URL="redis://127.0.0.1:1/0", RATE_LIMIT_FAIL_OPEN=fail_open,
                           TOKEN_LIMIT_MAX="10", CONCURRENCY_LIMIT="1")  # fmt: skip
    answers = [httpx.post(server.url + GENERATE, json={"prompt": "down", "stream": False},
                          timeout=20) for _ in range(3)]  # fmt: skip
    assert [a.status_code for a in answers] == [status] * 3
    assert all("ratelimit" not in a.headers for a in answers)
