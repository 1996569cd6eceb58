"""Admission in-process: what is counted against the limit, what resumes, what is over.

The app runs behind an ``httpx.ASGITransport`` whose client address is the client's
(``tests.support.in_process``), on a real Valkey (and a cluster: the limit's semantics are Redis's).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from harness.servers import free_port
from tests.support import sse
from tests.support.bodies import GENERATE
from tests.support.in_process import InProcess, in_process
from tests.support.redis import redis_calls

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

LIMIT = 3


@pytest.fixture
async def limited(app_env: dict[str, str]) -> AsyncIterator[InProcess]:
    env = {**app_env, "RATE_LIMIT_MAX": str(LIMIT), "RATE_LIMIT_WINDOW": "60"}
    async with in_process(env) as app:
        yield app


def new_client() -> str:
    number = uuid.uuid4().int
    return f"203.0.{number % 250}.{(number >> 8) % 250 + 1}"


async def post(app: InProcess, ip: str, body: dict[str, Any] | None = None,
               path: str = GENERATE, **headers: str) -> httpx.Response:  # fmt: skip
    async with app.client(ip, **headers) as http:
        return await http.post(path, json=body or {"prompt": "hi", "stream": False})


async def test_limit_then_429_with_exact_headers(limited: InProcess) -> None:
    ip = new_client()
    answers = [await post(limited, ip) for _ in range(LIMIT + 1)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[3]
    wait = int(refused.headers["retry-after"])  # where in the window we are decides it
    assert 1 <= wait <= 120
    assert [a.headers["ratelimit"] for a in answers[:2]] == ['"default";r=2;t=0',
                                                             '"default";r=1;t=0']  # fmt: skip
    assert refused.headers["ratelimit"] == f'"default";r=0;t={wait}'
    last_admitted = answers[2].headers["ratelimit"]  # ms earlier: may round a second higher
    assert last_admitted in (f'"default";r=0;t={wait}', f'"default";r=0;t={wait + 1}')
    assert {a.headers["ratelimit-policy"] for a in answers} == {'"default";q=3;w=60'}
    assert refused.headers["cache-control"] == "no-store"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json() == {
        "status": 429,
        "title": "Too Many Requests",
        "detail": f"Rate limit of 3 requests per 60 seconds exceeded; retry in {wait} seconds.",
        "error": "rate_limited",
        "quota": "requests",
    }


async def test_generation_resources_are_limited_but_their_events_are_not(
    limited: InProcess,
) -> None:
    ip = new_client()
    created = [
        await post(limited, ip, {"prompt": "res"}, path="/v1/chats/generations")
        for _ in range(LIMIT + 1)
    ]
    assert [c.status_code for c in created] == [202, 202, 202, 429]
    async with limited.client(ip) as http:
        events = await sse.fetch(http, "GET", created[0].json()["events"])
        probes = [await http.get(path) for path in ("/livez", "/readyz", "/v1/health")]
    assert events.status == 200
    assert "ratelimit" not in events.headers
    assert [p.status_code for p in probes] == [200, 200, 200]


async def test_resumes_are_neither_limited_nor_counted(limited: InProcess) -> None:
    ip = new_client()
    body = {"prompt": f"resume {ip}"}
    async with limited.client(ip) as http:
        first = await sse.fetch(http, "POST", GENERATE, json=body)
        generation = first.events()[0].json()["generation"]
        for _ in range(LIMIT - 1):
            await http.post(GENERATE, json=body)
        assert (await http.post(GENERATE, json=body)).status_code == 429
        for _ in range(5):
            resumed = await sse.fetch(http, "POST", GENERATE, json=body,
                                      headers={"Last-Event-ID": f"{generation}.3"})  # fmt: skip
            assert resumed.status == 200
            assert resumed.events()[0].last_event_id == f"{generation}.4"
        done = await http.post(GENERATE, json=body, headers={"Last-Event-ID": f"{generation}.done"})
        assert done.status_code == 204
        unknown = "g_AAAAAAAAAAAAAAAAAAAAAA.3"
        assert (await http.post(GENERATE, json=body, headers={"Last-Event-ID": unknown})
                ).status_code == 429  # fmt: skip
        other = await http.post(GENERATE, json={"prompt": "something else"},
                                headers={"Last-Event-ID": f"{generation}.3"})  # fmt: skip
        assert other.status_code == 429  # a known id does not carry a new request past the limit


async def test_clients_are_counted_apart_and_ipv6_per_64(limited: InProcess) -> None:
    async def used_up(ip: str) -> bool:
        return (await post(limited, ip)).status_code == 429

    suffix = uuid.uuid4().int % 9000 + 1000
    for _ in range(LIMIT):
        await post(limited, f"2001:db8:{suffix}:1::1")
    assert await used_up(f"2001:db8:{suffix}:1:ffff::2")  # same /64
    assert not await used_up(f"2001:db8:{suffix}:2::1")  # another /64
    ip = new_client()
    for _ in range(LIMIT):
        await post(limited, f"::ffff:{ip}")
    assert await used_up(ip)  # an IPv4-mapped address is its IPv4 address
    assert not await used_up(new_client())


async def test_waiting_retry_after_admits(app_env: dict[str, str]) -> None:
    env = {**app_env, "RATE_LIMIT_MAX": "2", "RATE_LIMIT_WINDOW": "1"}
    async with in_process(env) as service:
        ip = new_client()
        statuses = [(await post(service, ip)).status_code for _ in range(3)]
        refused = await post(service, ip)
        assert statuses[:2] == [200, 200]
        assert refused.status_code == 429
        await asyncio.sleep(int(refused.headers["retry-after"]))
        assert (await post(service, ip)).status_code == 200


@pytest.mark.parametrize(
    ("fail_open", "status"),
    [pytest.param("true", 200, id="fail-open"), pytest.param("false", 503, id="fail-closed")],
)
async def test_redis_down(app_env: dict[str, str], fail_open: str, status: int) -> None:
    env = {
        **app_env,
        "RATE_LIMIT_MAX": "1",
        "RATE_LIMIT_FAIL_OPEN": fail_open,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    async with in_process(env) as service:
        answers = [await post(service, new_client()) for _ in range(3)]
    assert [a.status_code for a in answers] == [status] * 3
    if status == 503:
        assert answers[0].json()["error"] == "rate_limit_unavailable"
    else:
        assert "ratelimit" not in answers[0].headers
        assert answers[0].headers["x-cache"] == "BYPASS"


async def test_a_request_that_starts_nothing_is_not_counted(limited: InProcess) -> None:
    """HEAD opens no generation; a malformed request is counted like any request, with its
    headers."""
    ip = new_client()
    async with limited.client(ip) as http:
        heads = [await http.head(GENERATE, params={"prompt": "hi"}) for _ in range(LIMIT + 1)]
        malformed = await http.post(GENERATE, content=b"{nope")
    assert [h.status_code for h in heads] == [200] * (LIMIT + 1)
    assert "ratelimit" not in heads[0].headers
    assert malformed.status_code == 400
    assert malformed.headers["ratelimit"] == '"default";r=2;t=0'


async def test_an_id_of_an_ended_stream_does_not_carry_a_new_request_past_the_limit(
    limited: InProcess,
) -> None:
    """Only a stream is over with ``<g>.done``; a JSON request or a new generation resource
    that sends it is a new request, and counted."""
    ip = new_client()
    async with limited.client(ip) as http:
        first = await sse.fetch(http, "POST", GENERATE, json={"prompt": "over"})
        ended = {"Last-Event-ID": f"{first.events()[0].json()['generation']}.done"}
        json_calls = [
            await http.post(GENERATE, json={"prompt": "over", "stream": False}, headers=ended)
            for _ in range(LIMIT)
        ]
        resource = await http.post("/v1/chats/generations", json={"prompt": "x"}, headers=ended)
    assert [r.status_code for r in json_calls] == [200, 200, 429]
    assert resource.status_code == 429


async def test_a_resume_reads_the_generation_once(limited: InProcess, redis_url: str) -> None:
    """One read of the generation's meta (and one of the cache, where it finished): GETs
    counted by the server over the resume of a finished generation."""
    async with limited.client(new_client()) as http:
        first = await sse.fetch(http, "POST", GENERATE, json={"prompt": "read once"})
        generation = first.events()[0].json()["generation"]
        registry = limited.state["registry"]
        for _ in range(100):  # until this worker has forgotten it, so that Redis is asked
            located = await registry.locate(generation)
            if located is not None and located.local is None:
                break
            await asyncio.sleep(0.01)
        before = redis_calls(redis_url, "get")
        resumed = await sse.fetch(http, "POST", GENERATE, json={"prompt": "read once"},
                                      headers={"Last-Event-ID": f"{generation}.3"})  # fmt: skip
        after = redis_calls(redis_url, "get")
    assert resumed.events()[0].last_event_id == f"{generation}.4"
    assert after - before == 2
