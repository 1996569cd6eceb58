"""What every API surface shares (native, OpenAI-compatible, Ollama-compatible), over real
sockets: one generation for the same content, hang-ups that cancel it, limits, and streams
that fetch-based readers parse."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from harness.servers import Server, simulator_counters
from tests.support import sse
from tests.support.bodies import unique

pytestmark = [pytest.mark.anyio, pytest.mark.system]
SLOW = {"sim_tokens": 200, "sim_token_delay": 0.05}


def requests(label: str, *, stream: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """The same question as each surface asks it."""
    messages = [{"role": "user", "content": unique(label)}]
    return {
        "native": ("/v1/chats/generate", {"messages": messages, "stream": stream,
                                          "options": SLOW}),
        "openai": ("/v1/chat/completions", {"model": "llama3.2", "messages": messages,
                                            "stream": stream, "options": SLOW}),
        "ollama": ("/api/chat", {"model": "llama3.2", "messages": messages, "stream": stream,
                                 "options": SLOW}),
    }  # fmt: skip


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("surface", ["native", "openai", "ollama"])
async def test_hanging_up_cancels_the_upstream_request(
    service: Server, simulator: Server, surface: str, stream: bool
) -> None:
    path, body = requests(f"hang up {surface}", stream=stream)[surface]
    before = simulator_counters(simulator)
    async with httpx.AsyncClient(base_url=service.url, timeout=20) as http:
        with anyio.move_on_after(0.6):  # a few tokens in, then the client is gone
            async with http.stream("POST", path, json=body) as response:
                async for _ in response.aiter_raw():
                    pass
    hung_up = time.monotonic()
    while simulator_counters(simulator)["cancelled"] == before["cancelled"]:
        assert time.monotonic() - hung_up < 1.0, "upstream still running a second after hang-up"
        await anyio.sleep(0.02)
    assert simulator_counters(simulator)["completed"] == before["completed"]


async def test_identical_requests_through_three_surfaces_make_one_generation(
    service: Server, simulator: Server
) -> None:
    asked = requests("joined", stream=True)
    for _, body in asked.values():
        body["options"] = {"sim_tokens": 5, "sim_token_delay": 0.1}
    before = simulator_counters(simulator)
    async with httpx.AsyncClient(base_url=service.url, timeout=20) as http:
        results: dict[str, httpx.Response] = {}

        async def one(surface: str) -> None:
            path, body = asked[surface]
            results[surface] = await http.post(path, json=body)

        async with anyio.create_task_group() as group:
            for surface in asked:
                group.start_soon(one, surface)
    assert simulator_counters(simulator)["started"] == before["started"] + 1
    assert len({r.headers["x-generation-id"] for r in results.values()}) == 1
    assert sorted(r.headers["x-cache"] for r in results.values()) == ["JOINED", "JOINED", "MISS"]


async def test_native_streams_have_no_block_without_data(service: Server) -> None:
    """A block without data is a message with empty data to ``@microsoft/fetch-event-source``
    (it dispatches at every blank line): the opening, heartbeats before a slow first token,
    and a resumed stream hold none."""
    body = {"prompt": unique("blocks"),
            "options": {"sim_first_token_delay": 2.5, "sim_tokens": 3}}  # fmt: skip
    async with httpx.AsyncClient(base_url=service.url, timeout=20) as http:
        first = await http.post("/v1/chats/generate", json=body)
        assert first.content.count(b": ping\n") >= 2
        assert sse.blocks_without_data(first.content) == []
        generation = first.headers["x-generation-id"]
        resumed = await http.get(f"/v1/chats/generations/{generation}/events",
                                 headers={"Last-Event-ID": f"{generation}.0"})  # fmt: skip
    assert resumed.content.startswith(b"retry: 2000\nid: ")
    assert sse.blocks_without_data(resumed.content) == []
    assert [e.type for e in sse.events(resumed.content)] == ["token", "token", "done"]


async def test_limits_count_every_surface_and_never_metadata(
    start_service: Callable[..., Server],
) -> None:
    server = start_service(RATE_LIMIT_MAX="2")
    asked = requests("limited", stream=False)
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        for _ in range(3):  # more reads than the limit: none is counted or refused
            for path in ("/v1/models", "/api/tags", "/api/ps", "/api/version"):
                read = await http.get(path)
                assert read.status_code == 200, path
                assert "ratelimit" not in read.headers
            shown = await http.post("/api/show", json={"model": "llama3.2"})
            assert shown.status_code == 200
        statuses = []
        for surface in ("native", "openai", "ollama"):
            path, body = asked[surface]
            body["options"] = {"sim_tokens": 2}
            statuses.append((await http.post(path, json=body)).status_code)
    assert statuses == [200, 200, 429]
