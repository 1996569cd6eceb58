"""What the test modules share: settings, an SSE reader, fakes, and in-process and real apps.

The SSE parser follows the WHATWG HTML standard, for reading our streams the way a browser's
``EventSource`` does (lines end in CR, LF or CRLF; one optional space after the colon; ``data``
lines join with LF; an event without data is not dispatched). ``ScriptedSource`` is a fake
``TokenSource``; ``in_process`` runs the real app (lifespan included) behind an
``httpx.ASGITransport`` with Ollama mocked at its transport: no sockets, milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import redis
import yaml
from starlette.types import Receive, Scope, Send

from app.errors import ServiceError
from app.generations.request import CompletionRequest
from app.lifespan import State
from app.main import create_app
from app.settings import Settings
from app.store.client import RedisClient
from app.upstream.engine import Emit, Finished, Token
from harness import servers
from harness.servers import Server, redis_client
from simulator.app import Behaviour
from simulator.app import create_app as create_simulator

GENERATE = "/v1/chats/generate"
ROOT = Path(__file__).parent.parent
# Small numbers keep the suite fast; tests that need others start their own app.
SERVICE_ENV = {
    "HEARTBEAT_INTERVAL": "1",
    "UPSTREAM_TIMEOUT": "5",
    "UPSTREAM_IDLE_TIMEOUT": "2",
    "RESUME_GRACE": "0",
    "RATE_LIMIT_MAX": "1000000",  # on, so every test passes through it, but out of the way
    "SHUTDOWN_GRACE": "2",
    "LOG_LEVEL": "warning",
}


def compose() -> dict[str, Any]:
    """compose.yaml, parsed."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def slow(prompt: str, tokens: int = 12, delay: float = 0.1, **options: Any) -> dict[str, Any]:
    """A body the simulator answers with ``tokens`` tokens, ``delay`` seconds apart."""
    return {"prompt": prompt, "options": {"sim_tokens": tokens, "sim_token_delay": delay,
                                          **options}}  # fmt: skip


async def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


async def simulator_text(ollama: Server | httpx.AsyncClient, body: dict[str, Any]) -> str:
    """What Ollama (the simulator, a process or in-process) itself streams for ``body``: the
    reference text."""
    if isinstance(ollama, Server):
        async with httpx.AsyncClient(base_url=ollama.url) as direct:
            return await simulator_text(direct, body)
    response = await ollama.post("/api/generate", json={"model": "llama3.2", **body})
    lines = [httpx.Response(200, content=line).json() for line in response.content.splitlines()]
    return "".join(line["response"] for line in lines)


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


@dataclass
class ScriptedSource:
    """A ``TokenSource`` that emits ``texts`` (pausing ``gate`` before each) then finishes or
    raises ``error``; it records each request and whether it was cancelled."""

    texts: Sequence[str] = ("Hel", "lo")
    error: ServiceError | None = None
    gate: asyncio.Event | None = None
    requests: list[CompletionRequest] = field(default_factory=list)
    cancelled: int = 0

    async def generate(self, request: CompletionRequest, emit: Emit, *, client: str = "") -> None:
        self.requests.append(request)
        try:
            for text in self.texts:
                if self.gate is not None:
                    await self.gate.wait()
                    self.gate.clear()
                emit(Token({"text": text}))
            if self.error is not None:
                raise self.error
            emit(Finished({"done_reason": "stop", "eval_count": len(self.texts)}))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def fetch_from(server: Server, method: str, path: str, **kwargs: Any) -> Received:
    """``fetch`` from a real app process, on a client of its own."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await fetch(http, method, path, **kwargs)


def tokens_of(received: Received) -> list[Event]:
    return [e for e in received.events() if e.type == "token"]


@dataclass
class InProcess:
    """The app of ``in_process``; ``client(ip)`` speaks to it as the client at ``ip``."""

    state: State
    asgi: Callable[[Scope, Receive, Send], Any]
    ollama: httpx.AsyncClient  # the in-process simulator, to read its counters

    def client(self, ip: str = "203.0.113.9", **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.asgi, client=(ip, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://bib.test", headers=headers)

    async def simulator_counters(self) -> dict[str, int]:
        counters: dict[str, int] = (await self.ollama.get("/_sim/counters")).json()
        return counters


@asynccontextmanager
async def in_process(
    env: dict[str, str], *, ollama: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[InProcess]:
    """The real app, lifespan included, on the settings ``env`` gives, with no sockets but
    Redis's: Ollama is the simulator (12 tokens, no delay) behind an ``httpx.ASGITransport``,
    unless ``ollama`` is another transport. Both test clients buffer whole bodies, so nothing
    here can show tokens arriving one by one: that needs a real server."""
    simulator = create_simulator(Behaviour(tokens=12, token_delay=0))
    app = create_app(
        Settings.from_environ(env), upstream_transport=ollama or httpx.ASGITransport(app=simulator)
    )
    async with app.router.lifespan_context(app) as state:

        async def served(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state or {})  # what a server does with the lifespan's state
            await app(scope, receive, send)

        sim = httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator), base_url="http://o")
        async with sim:
            yield InProcess(cast(State, state), served, sim)


def redis_calls(url: str, command: str) -> int:
    """How many times the Redis server (every node of a cluster) has run ``command``, those
    inside scripts included."""
    with redis_client(url) as client:
        if isinstance(client, redis.RedisCluster):
            nodes = client.get_nodes()  # type: ignore[no-untyped-call]  # untyped
            stats = [client.info("commandstats", target_nodes=node) for node in nodes]
        else:
            stats = [client.info("commandstats")]
    return sum(int(s.get(f"cmdstat_{command}", {}).get("calls", 0)) for s in stats)


def count_pipelines(redis: RedisClient) -> Callable[[], int]:
    """Counts the pipelines opened on ``redis`` from now on (a spy: they still run)."""
    opened = 0
    pipeline = redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal opened
        opened += 1
        return pipeline(*args, **kwargs)

    redis.pipeline = counting  # type: ignore[method-assign]
    return lambda: opened


def keys_command(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m app keys ...`` as a person runs it, with the service's settings."""
    env = {**os.environ, "REDIS_URL": redis_url}
    argv = [servers.PYTHON, "-m", "app", "keys", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)


def made_key(redis_url: str, name: str, *limits: str) -> str:
    """A new API key named ``name`` (``--rate-limit N`` among ``limits``)."""
    created = keys_command(redis_url, "create", name, *limits)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("bib_")
    return key
