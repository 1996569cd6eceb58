"""Reading our streams: an SSE parser, and whole exchanges read off a socket with arrival times.

The parser follows the WHATWG HTML standard, for reading our streams the way a browser's
``EventSource`` does (lines end in CR, LF or CRLF; one optional space after the colon; ``data``
lines join with LF; an event without data is not dispatched).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from harness.servers import Server


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: str
    last_event_id: str

    def json(self) -> Any:
        return orjson.loads(self.data)


@dataclass(frozen=True, slots=True)
class Comment:
    text: str


@dataclass(frozen=True, slots=True)
class Retry:
    milliseconds: int


Item = Event | Comment | Retry


def parse(stream: bytes) -> list[Item]:
    """Everything a conforming client sees, in order; an unfinished last event is dropped."""
    text = stream.decode("utf-8").removeprefix("\ufeff")
    items: list[Item] = []
    event_type, data, last_id = "", "", ""
    lines = re.split(r"\r\n|\r|\n", text)
    for line in lines[:-1]:  # the part after the last line break is not a line yet
        if not line:
            if data:
                items.append(Event(event_type or "message", data.removesuffix("\n"), last_id))
            event_type, data = "", ""
            continue
        if line.startswith(":"):
            items.append(Comment(line[1:].removeprefix(" ")))
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isdigit():
            items.append(Retry(int(value)))
    return items


def blocks_without_data(stream: bytes) -> list[str]:
    """The blocks (up to a blank line) that hold no ``data:`` line: each one a message with
    empty data to a fetch-based reader, and a crash for one that parses data as JSON."""
    text = stream.decode("utf-8")
    *blocks, _unfinished = re.split(r"(?:\r\n|\r|\n){2}", text)
    return [b for b in blocks if not any(line.startswith("data:") for line in b.splitlines())]


def events(stream: bytes) -> list[Event]:
    return [item for item in parse(stream) if isinstance(item, Event)]


def text_of(stream: bytes) -> str:
    """The concatenated ``text`` of every token event."""
    return "".join(e.json().get("text", "") for e in events(stream) if e.type == "token")


@dataclass
class Received:
    """One HTTP exchange as read off the socket, with each chunk's arrival time."""

    status: int
    headers: dict[str, str]
    body: bytes
    arrivals: list[tuple[float, bytes]]

    def items(self) -> list[Item]:
        return parse(self.body)

    def events(self) -> list[Event]:
        return events(self.body)

    def json(self) -> Any:
        return orjson.loads(self.body)

    def arrival_of(self, marker: bytes) -> float:
        """Seconds from the request until the chunk that completed ``marker`` arrived."""
        seen = b""
        for at, chunk in self.arrivals:
            seen += chunk
            if marker in seen:
                return at
        raise AssertionError(f"{marker!r} never arrived")


async def fetch(
    client: Any,
    method: str,
    url: str,
    *,
    stop_after: bytes | None = None,
    **kwargs: Any,
) -> Received:
    """Reads a whole response (or up to ``stop_after``, then hangs up) from an httpx client."""
    started = time.monotonic()
    arrivals: list[tuple[float, bytes]] = []
    async with client.stream(method, url, **kwargs) as response:
        body = b""
        async for chunk in response.aiter_raw():
            arrivals.append((time.monotonic() - started, chunk))
            body += chunk
            if stop_after is not None and stop_after in body:
                break
        return Received(response.status_code, dict(response.headers), body, arrivals)


async def fetch_from(server: Server, method: str, path: str, **kwargs: Any) -> Received:
    """``fetch`` from a real app process, on a client of its own."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await fetch(http, method, path, **kwargs)


def tokens_of(received: Received) -> list[Event]:
    return [e for e in received.events() if e.type == "token"]
