"""The SSE response (``app.streams``): the private hooks of sse-starlette it overrides, and a
reader that stops reading, dropped quietly."""

from __future__ import annotations

import pytest


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
