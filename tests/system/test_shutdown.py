"""Graceful shutdown with real processes and signals."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from harness.servers import Server
from tests.support import sse

pytestmark = [pytest.mark.anyio, pytest.mark.system]

GENERATE = "/v1/chats/generate"
GRACE = 1.5


async def test_sigterm_drains_then_ends_open_streams_and_exits(
    start_service: Callable[..., Server],
) -> None:
    """50 open streams: readiness fails at once, new work is refused, a short stream finishes,
    the rest end with shutting_down after the grace, and the process exits soon after."""
    service = start_service(SHUTDOWN_GRACE=str(GRACE), RESUME_GRACE="5")
    other = start_service()
    long = {"options": {"sim_tokens": 400, "sim_token_delay": 0.05}}
    short = {"prompt": "short", "options": {"sim_tokens": 8, "sim_token_delay": 0.1}}
    async with httpx.AsyncClient(base_url=service.url, timeout=30,
                                 limits=httpx.Limits(max_connections=None)) as http:  # fmt: skip

        async def stream(body: dict[str, Any]) -> sse.Received:
            return await sse.fetch(http, "POST", GENERATE, json=body)

        streams = [asyncio.create_task(stream({"prompt": f"long {i}", **long})) for i in range(50)]
        finishing = asyncio.create_task(stream(short))
        await asyncio.sleep(1.0)
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.3)
        ready = await http.get("/readyz")
        refused = await http.post(GENERATE, json={"prompt": "new"})
        received = await asyncio.gather(*streams)
        ended = time.monotonic() - signalled
        done = await finishing
    assert (ready.status_code, ready.json()["status"]) == (503, "fail")
    assert (refused.status_code, refused.json()["error"]) == (503, "shutting_down")
    assert done.events()[-1].type == "done"
    for one in received:
        last = one.events()[-1]
        assert last.json()["error"] == "shutting_down"
        assert last.last_event_id == sse.events(one.body)[-2].last_event_id  # no id of its own
    assert GRACE <= ended < GRACE + 3
    service.process.wait(timeout=GRACE + 5)
    token = [e for e in received[0].events() if e.type == "token"][-1].last_event_id
    async with httpx.AsyncClient(base_url=other.url, timeout=30) as http:
        resumed = await sse.fetch(
            http,
            "POST",
            GENERATE,
            json={"prompt": "long 0", **long},
            headers={"Last-Event-ID": token},
            stop_after=b"event: start\n",
        )
    assert resumed.events()[0].json()["reset"] is True  # reconnected elsewhere: starts afresh


async def test_idle_server_exits_at_once(start_service: Callable[..., Server]) -> None:
    service = start_service(SHUTDOWN_GRACE="30")
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    service.process.wait(timeout=10)
    assert time.monotonic() - started < 3
