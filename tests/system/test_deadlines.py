"""Clients that send their request slowly, over real sockets: a head trickled one line every
second, half a head and then nothing, a body that stops; all cut at their deadline while a
stream on the same worker goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from harness.servers import Server, sample
from tests.support import sse
from tests.support.bodies import unique

pytestmark = [pytest.mark.anyio, pytest.mark.system]
HEAD, BODY = 2.0, 2.0


async def _until_closed(reader: asyncio.StreamReader, limit_seconds: float) -> tuple[bytes, float]:
    """What the server sent before it closed the connection, and when it did."""
    started = time.monotonic()
    received = b""
    async with asyncio.timeout(limit_seconds):
        while chunk := await reader.read(65536):
            received += chunk
    return received, time.monotonic() - started


async def _trickle(port: int, lines: list[bytes], every: float) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def send() -> None:
        for line in lines:
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(every)

    sender = asyncio.create_task(send())
    try:
        received, _ = await _until_closed(reader, HEAD + BODY + 5)
    finally:
        sender.cancel()
        writer.close()
    return received, time.monotonic() - started


async def test_slow_requests_are_cut_while_a_stream_goes_on(
    start_service: Callable[..., Server],
) -> None:
    server = start_service(REQUEST_HEAD_TIMEOUT=str(HEAD), REQUEST_BODY_TIMEOUT=str(BODY))
    slow = {"prompt": unique("long"),
            "options": {"sim_tokens": 12, "sim_token_delay": 0.5}}  # fmt: skip
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        stream = asyncio.create_task(http.post("/v1/chats/generate", json=slow))
        head = [b"POST /v1/chats/generate HTTP/1.1\r\n", b"Host: x\r\n"]
        head += [b"X-Slow: %d\r\n" % n for n in range(10)]  # a header a second: never done
        half = [b"GET /v1/models HTTP/1.1\r\nHo"]  # half a head, then nothing
        stop = [b'POST /v1/chats/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"p']
        trickled, halved, stalled = await asyncio.gather(
            _trickle(server.port, head, 1.0), _trickle(server.port, half, 10),
            _trickle(server.port, stop, 10))  # fmt: skip
        for received, seconds in (trickled, halved):
            assert received.startswith(b"HTTP/1.1 408 ")
            assert HEAD - 0.2 < seconds < HEAD + 1.5
        received, seconds = stalled
        assert received.startswith(b"HTTP/1.1 408 ")
        assert BODY - 0.2 < seconds < BODY + 1.5
        answered = await stream
        metrics = (await http.get("/metrics")).text
    assert answered.status_code == 200
    assert [e.type for e in sse.events(answered.content)][-1] == "done"
    assert sample(metrics, "bib_slow_requests_total", part="head") == 2
    assert sample(metrics, "bib_slow_requests_total", part="body") == 1


async def test_a_quiet_stream_and_keep_alive_are_not_cut(
    start_service: Callable[..., Server],
) -> None:
    server = start_service(REQUEST_HEAD_TIMEOUT="1", REQUEST_BODY_TIMEOUT="1",
                           HEARTBEAT_INTERVAL="10")  # fmt: skip
    slow = {"prompt": unique("quiet"),
            "options": {"sim_first_token_delay": 2.5, "sim_tokens": 2}}  # fmt: skip
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        answered = await http.post("/v1/chats/generate", json=slow)  # 2.5 s without a byte
        assert answered.status_code == 200
        await asyncio.sleep(1.5)  # idle on the kept-alive connection, under uvicorn's 5 s
        again = await http.get("/v1/models")
        assert again.status_code == 200
