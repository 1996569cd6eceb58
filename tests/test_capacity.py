"""A thousand open streams on one worker: heartbeats stay on time, probes stay fast."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import httpx
import orjson
import pytest

from bench.load import hold_streams, post
from tests.servers import Server

pytestmark = pytest.mark.anyio

STREAMS = 1000
HEARTBEAT = 1.0


async def test_a_thousand_open_streams(start_service: Callable[..., Server]) -> None:
    service = start_service(HEARTBEAT_INTERVAL=str(HEARTBEAT), UPSTREAM_TIMEOUT="60")
    # Ollama never answers: every stream is committed and kept alive by pings alone
    requests = [
        post("/v1/chats/generate", orjson.dumps({"prompt": f"capacity {i}", "options": {
            "sim_fault": "hang", "sim_fault_after": 0}}))
        for i in range(STREAMS)
    ]  # fmt: skip
    holding = asyncio.create_task(hold_streams(service.port, requests, seconds=6))
    await asyncio.sleep(3)
    probe_seconds = []
    async with httpx.AsyncClient(base_url=service.url) as http:
        for _ in range(10):
            started = time.perf_counter()
            assert (await http.get("/livez")).status_code == 200
            probe_seconds.append(time.perf_counter() - started)
            await asyncio.sleep(0.2)
        open_streams = (await http.get("/metrics")).text
    pings = await holding
    assert "bib_open_streams 1000.0" in open_streams
    assert max(probe_seconds) < 0.1
    for times in pings:
        assert len(times) >= 4  # committed at 1 s, then a ping every second until 6 s
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) < HEARTBEAT * 1.6
