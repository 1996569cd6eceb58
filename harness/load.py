"""A lean HTTP/1.1 load client on raw asyncio streams, so the client costs little CPU."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timing:
    first_token_seconds: float
    total_seconds: float


async def stream_once(port: int, request: bytes, first: bytes, last: bytes) -> Timing:
    """Sends ``request`` and reads until ``last``; times ``first`` (the first token's marker)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    seen = b""
    first_at = 0.0
    while last not in seen:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"connection closed early: {seen[-300:]!r}")
        seen = seen[-4096:] + chunk
        if not first_at and first in seen:
            first_at = time.perf_counter() - started
    writer.close()
    return Timing(first_at, time.perf_counter() - started)


async def read_until_end(port: int, request: bytes) -> str:
    """Sends ``request`` and reads its stream to the end: ``done``, ``error`` or ``closed``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    seen = b""
    try:
        while chunk := await reader.read(65536):
            seen = seen[-64:] + chunk
            for end in (b"done", b"error"):
                if b"\nevent: " + end + b"\n" in seen:
                    return end.decode()
        return "closed"
    finally:
        writer.close()


def post(path: str, body: bytes, connection: str = "close") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    ).encode() + body


def get(path: str, connection: str = "close") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: {connection}\r\n\r\n".encode()


async def concurrent(
    count: int, port: int, requests: Sequence[bytes], first: bytes, last: bytes
) -> list[Timing]:
    return list(
        await asyncio.gather(
            *(stream_once(port, requests[i % len(requests)], first, last) for i in range(count))
        )
    )


def cpu_seconds(pid: int) -> float:
    """CPU time of all threads of a process, in nanosecond resolution (/proc schedstat)."""
    total_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
            total_ns += int(schedstat.read().split()[0])
    return total_ns / 1e9


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


async def _keep_alive_loop(port: int, request: bytes, stop_at: float, status: bytes | None
                           ) -> int:  # fmt: skip
    """Sends ``request`` over one keep-alive connection until ``stop_at``; counts answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = 0
    while time.perf_counter() < stop_at:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if status is not None and not head.startswith(b"HTTP/1.1 " + status):
            raise RuntimeError(f"unexpected answer: {head[:200]!r}")
        if b"content-length:" not in head.lower():
            raise RuntimeError(f"no content-length: {head!r}")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        answered += 1
    writer.close()
    return answered


async def throughput(
    port: int, request: bytes, connections: int, seconds: float, status: bytes | None = b"200"
) -> float:
    """Requests per second over ``connections`` keep-alive connections (bodies with a length);
    every answer must have ``status`` (``None``: any)."""
    stop_at = time.perf_counter() + seconds
    counts = await asyncio.gather(
        *(_keep_alive_loop(port, request, stop_at, status) for _ in range(connections))
    )
    return sum(counts) / seconds


async def hold_streams(
    port: int,
    requests: Sequence[bytes],
    seconds: float,
    on_open: Callable[[], None] = lambda: None,
    pings: list[list[float]] | None = None,
) -> list[list[float]]:
    """Opens one stream per request, reads for ``seconds``; returns each stream's ping times
    (seconds since the start), filled in as they arrive into ``pings`` when given. ``on_open``
    is called as each stream's first bytes arrive."""
    started = time.perf_counter()
    connecting = asyncio.Semaphore(256)  # thousands of SYNs at once overflow a listen backlog
    times = pings if pings is not None else []
    times[:] = [[] for _ in requests]

    async def hold(request: bytes, seen: list[float]) -> None:
        async with connecting:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
        opened = False
        try:
            async with asyncio.timeout(seconds - (time.perf_counter() - started)):
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    if not opened:
                        opened = True
                        on_open()
                    seen += [time.perf_counter() - started] * chunk.count(b": ping\n")
        except (TimeoutError, ConnectionResetError):  # held long enough, or cut: it ends here
            pass
        finally:
            writer.close()

    await asyncio.gather(*(hold(r, seen) for r, seen in zip(requests, times, strict=True)))
    return times


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
