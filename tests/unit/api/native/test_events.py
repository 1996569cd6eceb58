"""The SSE encoding: exact bytes, identical to sse-starlette's encoder, parseable by browsers,
whatever the text (hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sse_starlette import ServerSentEvent

from app.api.native import events
from app.api.relay import SSE_PING
from app.errors import UpstreamTimeout
from app.generations.wire import token_payload
from tests.support import sse
from tests.support.strategies import json_values, texts

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
    (event,) = sse.events(frame)
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
    assert sse.parse(SSE_PING) == [sse.Comment("ping")]


@given(st.lists(texts, max_size=8), st.integers(0, 10**6))
def test_any_token_text_round_trips_through_a_browser_parser(tokens: list[str], first: int) -> None:
    stream = events.tokens("g_x", first, [token_payload({"text": t}) for t in tokens])
    parsed = sse.events(stream)
    assert [e.json()["text"] for e in parsed] == tokens
    assert [e.last_event_id for e in parsed] == [
        f"g_x.{n}" for n in range(first, first + len(tokens))
    ]
    assert {e.type for e in parsed} <= {"token"}


@given(texts, texts, st.lists(st.dictionaries(texts, json_values, max_size=3), max_size=2))
def test_thinking_and_tool_calls_round_trip(text: str, thinking: str, calls: list[Any]) -> None:
    fields = {"text": text, "thinking": thinking, "tool_calls": calls}
    (event,) = sse.events(events.tokens("g_x", 0, [token_payload(fields)]))
    assert event.json() == fields
