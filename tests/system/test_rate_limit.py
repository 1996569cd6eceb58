"""Rate limiting over real sockets: headers, 429s, resumes, client identity, Redis trouble.

The app trusts the loopback proxy (uvicorn's FORWARDED_ALLOW_IPS=127.0.0.1, the default), so
each test speaks for clients of its own through X-Forwarded-For, as a load balancer would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from harness import servers
from harness.servers import Server
from tests.support import sse

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.system]

GENERATE = "/v1/chats/generate"
LIMIT = 3


@pytest.fixture(scope="module")
def limited(service_env: dict[str, str]) -> Iterator[Server]:
    env = {**service_env, "RATE_LIMIT_MAX": str(LIMIT), "RATE_LIMIT_WINDOW": "60"}
    server = servers.app(env).start("/livez")
    yield server
    server.stop()


def new_client() -> str:
    number = uuid.uuid4().int
    return f"203.0.{number % 250}.{(number >> 8) % 250 + 1}"


def as_client(ip: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip, **headers}


async def post(server: Server, headers: dict[str, str], body: dict[str, Any] | None = None,
               path: str = GENERATE) -> httpx.Response:  # fmt: skip
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.post(path, json=body or {"prompt": "hi", "stream": False},
                               headers=headers)  # fmt: skip


async def test_streams_carry_the_headers_before_the_first_byte(limited: Server) -> None:
    async with httpx.AsyncClient(base_url=limited.url) as http:
        received = await sse.fetch(http, "GET", GENERATE, params={"prompt": "hi"},
                                   headers=as_client(new_client()))  # fmt: skip
    assert received.headers["ratelimit"] == '"default";r=2;t=0'
    assert received.events()[-1].type == "done"


async def test_forwarding_headers_from_an_untrusted_peer_are_ignored(
    start_service: Callable[..., Server],
) -> None:
    """A client connecting directly cannot escape its limit by claiming to be someone else."""
    direct = start_service(RATE_LIMIT_MAX=str(LIMIT), FORWARDED_ALLOW_IPS="192.0.2.1")
    answers = [
        await post(direct, {"X-Forwarded-For": new_client(), "Forwarded": f"for={new_client()}"})
        for _ in range(LIMIT + 2)
    ]
    assert [a.status_code for a in answers] == [200] * LIMIT + [429, 429]


async def test_replicas_share_one_limit(start_service: Callable[..., Server]) -> None:
    """Two separate app processes on one Redis: a client's requests count against one limit."""
    replicas = [start_service(RATE_LIMIT_MAX=str(LIMIT)) for _ in range(2)]
    ip = new_client()
    statuses = [(await post(replicas[i % 2], as_client(ip))).status_code for i in range(LIMIT + 2)]
    assert statuses == [200] * LIMIT + [429, 429]


@pytest.mark.parametrize("workers", [pytest.param("1", id="one-worker"),
                                     pytest.param("4", id="four-workers")])  # fmt: skip
async def test_a_burst_admits_exactly_the_limit(
    start_service: Callable[..., Server], workers: str
) -> None:
    service = start_service(RATE_LIMIT_MAX="10", WEB_CONCURRENCY=workers)
    ip = new_client()
    answers = await asyncio.gather(*(post(service, as_client(ip)) for _ in range(50)))
    assert sorted(a.status_code for a in answers) == [200] * 10 + [429] * 40
