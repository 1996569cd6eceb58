"""The SSE encoding: exact bytes, identical to sse-starlette's encoder, parseable by browsers."""

from __future__ import annotations

import pytest
from sse_starlette import ServerSentEvent

from app.api.native import events
from app.api.relay import SSE_PING
from app.errors import UpstreamTimeout
from app.generations.wire import token_payload
from tests import helpers

TRICKY = ["Hel", "lo\n", "\r", "\r\n", '"q"', "\u2028", "🍾", "data: x", ": c", "\\", "", " "]


def test_token_frames_match_sse_starlette() -> None:
    payloads = [token_payload({"text": text}) for text in TRICKY]
    expected = b"".join(
        ServerSentEvent(data=p.decode(), event="token", id=f"g_x.{n}", sep="\n").encode()
        for n, p in enumerate(payloads, 5)
    )
    assert events.tokens("g_x", 5, payloads) == expected


@pytest.mark.parametrize("text", TRICKY)
def test_any_token_text_round_trips_through_a_conforming_parser(text: str) -> None:
    frame = events.tokens("g_x", 0, [token_payload({"text": text})])
    (event,) = helpers.events(frame)
    assert event.json() == {"text": text}
    assert event.last_event_id == "g_x.0"


def test_opening_done_and_error_frames() -> None:
    assert events.opening("g_x", "llama3.2", cached=False) == (
        b"retry: 2000\n"
        b'event: start\ndata: {"generation":"g_x","model":"llama3.2","cached":false}\n\n'
    )
    assert b'"reset":true' in events.opening("g_x", "m", cached=False, reset=True)
    assert events.done("g_x", {"done_reason": "stop"}, cached=True) == (
        b'id: g_x.done\nevent: done\ndata: {"done_reason":"stop","cached":true}\n\n'
    )
    assert events.error("g_x", UpstreamTimeout("late")) == (
        b'id: g_x.error\nevent: error\ndata: {"error":"upstream_timeout","detail":"late"}\n\n'
    )
    assert helpers.parse(SSE_PING) == [helpers.Comment("ping")]
