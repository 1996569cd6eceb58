"""The SSE encoding: exact bytes, identical to sse-starlette's encoder, parseable by browsers."""

from __future__ import annotations

import pytest
from sse_starlette import ServerSentEvent

from app import events
from app.errors import UpstreamTimeout
from tests import sse

TRICKY = ["Hel", "lo\n", "\r", "\r\n", '"q"', "\u2028", "🍾", "data: x", ": c", "\\", "", " "]


def test_token_frames_match_sse_starlette() -> None:
    payloads = [events.token_payload({"text": text}) for text in TRICKY]
    expected = b"".join(
        ServerSentEvent(data=p.decode(), event="token", id=f"g_x.{n}", sep="\n").encode()
        for n, p in enumerate(payloads, 5)
    )
    assert events.tokens("g_x", 5, payloads) == expected


@pytest.mark.parametrize("text", TRICKY)
def test_any_token_text_round_trips_through_a_conforming_parser(text: str) -> None:
    frame = events.tokens("g_x", 0, [events.token_payload({"text": text})])
    (event,) = sse.events(frame)
    assert event.json() == {"text": text}
    assert event.last_event_id == "g_x.0"


def test_opening_done_and_error_frames() -> None:
    assert events.opening("g_x", "llama3.2", cached=False) == (
        b"retry: 2000\n\n"
        b'event: start\ndata: {"generation":"g_x","model":"llama3.2","cached":false}\n\n'
    )
    assert b'"reset":true' in events.opening("g_x", "m", cached=False, reset=True)
    assert events.done("g_x", {"done_reason": "stop"}, cached=True) == (
        b'id: g_x.done\nevent: done\ndata: {"done_reason":"stop","cached":true}\n\n'
    )
    assert events.error("g_x", UpstreamTimeout("late")) == (
        b'id: g_x.error\nevent: error\ndata: {"error":"upstream_timeout","detail":"late"}\n\n'
    )
    assert sse.parse(events.PING) == [sse.Comment("ping")]


def test_event_stream_overrides_the_send_hook_that_sse_starlette_calls() -> None:
    """app.streams replaces a private hook; if sse-starlette renames it, this fails."""
    import inspect

    from sse_starlette import EventSourceResponse

    from app.streams import EventStream

    assert "_send_with_timeout" in inspect.getsource(EventSourceResponse._stream_response)
    assert EventStream._send_with_timeout is not EventSourceResponse._send_with_timeout
    calls = inspect.getsource(EventSourceResponse.__call__)
    assert "self._ping(send)" in calls  # our _ping is the one the response starts
    assert {"active", "_send_lock"} <= set(vars(EventStream(iter(()))))


@pytest.mark.anyio
async def test_a_reader_that_times_out_twice_at_once_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The event and a ping both stuck in a full socket time out together: sse-starlette then
    raises a group of two SendTimeoutErrors, which must still be one warning, not a 500."""
    import asyncio
    from collections.abc import AsyncIterator, MutableMapping
    from typing import Any

    from app.streams import EventStream

    gate = asyncio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await gate.wait()  # both sends wait here, then time out in the same instant
            raise TimeoutError

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def body() -> AsyncIterator[bytes]:
        yield b"data: x\n\n"
        await asyncio.Event().wait()

    stream = EventStream(body(), ping=0.001, sep="\n", send_timeout=5)
    running = asyncio.create_task(stream({"type": "http", "method": "GET"}, receive, send))
    await asyncio.sleep(0.05)
    gate.set()
    await running
    assert caplog.text.count("dropped a client that read nothing for 5 s") == 1
