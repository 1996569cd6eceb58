"""Anthropic's wire format (unit): the stream's events in order and exactly, the Message of a
whole answer, and errors as the SDK reads them."""

from __future__ import annotations

import orjson
import pytest

from app.api.anthropic.wire import PING, MessageWire, error_body, error_response, message
from app.errors import InvalidRequest, RateLimited, UpstreamUnavailable
from app.generations.answer import gather
from app.generations.wire import token_payload
from tests.support import sse

GENERATION = "g_" + "A" * 22
STATS = {"done_reason": "stop", "prompt_eval_count": 26, "eval_count": 3}


def events(stream: bytes) -> list[tuple[str, dict[str, object]]]:
    parsed = [(e.type, e.json()) for e in sse.events(stream)]
    assert all(kind == data["type"] for kind, data in parsed)  # every event names itself
    return parsed


def test_a_text_stream_is_anthropics_events_in_order() -> None:
    wire = MessageWire("qwen3", show_thinking=True)
    stream = wire.tokens(GENERATION, 0, [token_payload({"text": "Hel"})])
    stream += wire.tokens(GENERATION, 1, [token_payload({"text": "lo\n"})])
    stream += wire.done(GENERATION, STATS, cached=False)
    parsed = events(stream)
    assert [kind for kind, _ in parsed] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    start = parsed[0][1]["message"]
    assert isinstance(start, dict)
    assert (start["id"], start["model"], start["content"]) == ("msg_" + "A" * 22, "qwen3", [])
    assert [data["delta"] for kind, data in parsed if kind == "content_block_delta"] == [
        {"type": "text_delta", "text": "Hel"},
        {"type": "text_delta", "text": "lo\n"},
    ]
    assert parsed[-2][1] == {"type": "message_delta",
                             "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"input_tokens": 26, "output_tokens": 3}}  # fmt: skip


def test_thinking_and_tool_calls_are_blocks_of_their_own() -> None:
    call = {"function": {"name": "f", "arguments": {"q": 1}}}
    wire = MessageWire("qwen3", show_thinking=True)
    stream = wire.tokens(GENERATION, 0, [token_payload({"thinking": "hm"}),
                                         token_payload({"text": "ok"}),
                                         token_payload({"tool_calls": [call, call]})])  # fmt: skip
    stream += wire.done(GENERATION, STATS, cached=False)
    starts = [data for kind, data in events(stream) if kind == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [  # type: ignore[index]  # JSON
        (0, "thinking"),
        (1, "text"),
        (2, "tool_use"),
        (3, "tool_use"),
    ]
    deltas = [data["delta"] for kind, data in events(stream) if kind == "content_block_delta"]
    assert deltas[0] == {"type": "thinking_delta", "thinking": "hm"}
    assert deltas[-1] == {"type": "input_json_delta", "partial_json": '{"q":1}'}
    assert events(stream)[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    hidden = MessageWire("qwen3", show_thinking=False).tokens(
        GENERATION, 0, [token_payload({"thinking": "hm"})]
    )
    assert b"thinking" not in hidden  # display "omitted"


def test_an_error_after_the_start_is_an_error_event_and_the_length_limit_max_tokens() -> None:
    wire = MessageWire("m", show_thinking=True)
    failed = wire.error(GENERATION, UpstreamUnavailable("gone"))
    assert events(failed) == [("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "gone"}})]  # fmt: skip
    ended = MessageWire("m", show_thinking=True).done(GENERATION, {"done_reason": "length"},
                                                      cached=True)  # fmt: skip
    assert events(ended)[-2][1]["delta"]["stop_reason"] == "max_tokens"  # type: ignore[index]  # JSON
    assert PING == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_a_whole_answer_is_a_message() -> None:
    call = {"function": {"name": "f", "arguments": {}}}
    payloads = [token_payload({"thinking": "hm"}), token_payload({"text": "Hi"}),
                token_payload({"tool_calls": [call]})]  # fmt: skip
    answer = gather("chat", "qwen3", payloads, STATS, cached=True)
    assert message(GENERATION, answer, show_thinking=True) == {
        "id": "msg_" + "A" * 22, "type": "message", "role": "assistant", "model": "qwen3",
        "content": [{"type": "thinking", "thinking": "hm", "signature": ""},
                    {"type": "text", "text": "Hi"},
                    {"type": "tool_use", "id": f"toolu_{'A' * 22}_0", "name": "f", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 26, "output_tokens": 3}}  # fmt: skip


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        pytest.param(InvalidRequest("bad"), 400, "invalid_request_error", id="invalid"),
        pytest.param(RateLimited("slow", retry_after_seconds=3), 429, "rate_limit_error",
                     id="rate-limited"),
        pytest.param(UpstreamUnavailable("busy"), 503, "overloaded_error", id="busy"),
    ],
)  # fmt: skip
def test_errors_are_anthropics_with_their_status(error: Exception, status: int, kind: str) -> None:
    assert isinstance(error, InvalidRequest | RateLimited | UpstreamUnavailable)
    answered = error_response(error)
    assert answered.status_code == status
    assert orjson.loads(answered.body) == error_body(error)
    assert error_body(error)["error"]["type"] == kind
