"""The SSE response (``app.api.relay``) driven as an ASGI server drives it: pings between events,
the client leaving, a reader that stops reading, and the worker stopping what is still open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, MutableMapping
from typing import Any

import pytest
from starlette.background import BackgroundTask

from app.api.relay import SSE_PING, BodyShortcutMiddleware, RelayResponse
from app.ops.shutdown import Drain

pytestmark = pytest.mark.anyio


class Client:
    """The ASGI server's side: records what is sent; ``leave`` is the client hanging up;
    ``stuck`` makes body sends wait like a socket whose reader stopped reading."""

    def __init__(self) -> None:
        self.sent: list[MutableMapping[str, Any]] = []
        self.left = asyncio.Event()
        self.stuck = False

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.stuck and message["type"] == "http.response.body":
            await asyncio.Event().wait()
        self.sent.append(message)

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


class Body:
    """A relay's body: yields ``chunks``, then waits forever (or ends, if ``ends``); notes its
    cleanup."""

    def __init__(self, *chunks: bytes, ends: bool = False) -> None:
        self.chunks, self.ends, self.closed = chunks, ends, False

    async def __call__(self) -> AsyncGenerator[bytes]:
        try:
            for chunk in self.chunks:
                yield chunk
            if not self.ends:
                await asyncio.Event().wait()
        finally:
            self.closed = True


def drain() -> Drain:
    return Drain(30, refuse=lambda: None, halt=lambda: None)


def stream(
    body: Body, worker: Drain, *, ping: float = 60, send_timeout: float = 5
) -> RelayResponse:
    return RelayResponse(body(), headers={"X-Cache": "MISS"}, ping_seconds=ping,
                       send_timeout_seconds=send_timeout, drain=worker)  # fmt: skip


async def test_sends_the_events_then_ends_the_body_and_runs_the_background() -> None:
    client, body, worker = Client(), Body(b"a\n\n", b"b\n\n", ends=True), drain()
    background = asyncio.Event()
    response = stream(body, worker)

    async def after() -> None:
        background.set()

    response.background = BackgroundTask(after)
    await response({"type": "http"}, client.receive, client.send)
    start = client.sent[0]
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert (b"x-cache", b"MISS") in start["headers"]
    assert client.bodies() == [b"a\n\n", b"b\n\n", b""]
    assert client.sent[-1]["more_body"] is False
    assert body.closed
    assert background.is_set()
    assert worker.open_streams == 0


async def test_pings_while_the_body_waits() -> None:
    client, worker = Client(), drain()
    response = stream(Body(b"a\n\n"), worker, ping=0.02)
    running = asyncio.create_task(response({}, client.receive, client.send))
    await asyncio.sleep(0.2)
    assert worker.open_streams == 1
    assert client.bodies()[0] == b"a\n\n"
    assert client.bodies()[1:5] == [SSE_PING] * 4
    client.left.set()
    await running


async def test_a_client_that_leaves_ends_the_body_at_once(caplog: pytest.LogCaptureFixture) -> None:
    client, body, worker = Client(), Body(b"a\n\n"), drain()
    running = asyncio.create_task(stream(body, worker)({}, client.receive, client.send))
    await asyncio.sleep(0.01)
    assert worker.open_streams == 1
    client.left.set()
    await asyncio.wait_for(running, 1)  # returns: neither cancelled nor raising
    assert body.closed
    assert worker.open_streams == 0
    assert b"" not in client.bodies()  # nobody to end the response for
    assert not caplog.records


async def test_a_reader_that_stops_reading_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The event and a ping both stuck in a full socket: one warning, not a 500."""
    client, body, worker = Client(), Body(b"a\n\n", b"b\n\n"), drain()
    client.stuck = True
    await asyncio.wait_for(stream(body, worker, ping=0.001, send_timeout=0.05)(
        {}, client.receive, client.send), 1)  # fmt: skip
    assert body.closed
    assert worker.open_streams == 0
    assert caplog.text.count("dropped a client that read nothing for 0.05 s") == 1


async def test_a_reader_stuck_while_only_pings_are_due_is_dropped_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, body, worker = Client(), Body(), drain()
    client.stuck = True
    await asyncio.wait_for(stream(body, worker, ping=0.01, send_timeout=0.05)(
        {}, client.receive, client.send), 1)  # fmt: skip
    assert body.closed
    assert caplog.text.count("dropped a client that read nothing") == 1


async def test_the_worker_stops_what_is_still_open() -> None:
    """What the drain does once its grace is over, and on a second SIGTERM."""
    client, worker = Client(), drain()
    bodies = [Body(b"a\n\n") for _ in range(3)]
    running = [asyncio.create_task(stream(body, worker)({}, client.receive, client.send))
               for body in bodies]  # fmt: skip
    await asyncio.sleep(0.01)
    assert worker.open_streams == 3
    worker._stop_and_exit()
    await asyncio.wait_for(asyncio.gather(*running), 1)
    assert all(body.closed for body in bodies)
    assert worker.open_streams == 0


async def test_a_cancellation_that_is_not_its_own_goes_on() -> None:
    """The server cancelling the request is not swallowed as if the stream had been stopped."""
    client, body, worker = Client(), Body(b"a\n\n"), drain()
    running = asyncio.create_task(stream(body, worker)({}, client.receive, client.send))
    await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert body.closed
    assert worker.open_streams == 0


async def test_body_messages_take_the_shortcut_past_the_layers_inside() -> None:
    """The start goes through every middleware (they stamp headers, note the status); the
    body goes to the send ``BodyShortcutMiddleware`` kept, which none of them wraps."""
    outer, inner, worker = Client(), Client(), drain()

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await stream(Body(b"a\n\n", ends=True), worker)(scope, receive, inner.send)

    await BodyShortcutMiddleware(app)({"type": "http"}, outer.receive, outer.send)
    assert [m["type"] for m in inner.sent] == ["http.response.start"]
    assert outer.bodies() == [b"a\n\n", b""]
