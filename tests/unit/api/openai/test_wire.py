"""OpenAI's chunks and bodies, as the ``openai`` SDK reads them (unit)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from app.api.openai import wire as openai_wire
from app.errors import RateLimited
from app.generations.wire import token_payload

GENERATION = "g_" + "x" * 22


def chunks(stream: bytes) -> list[dict[str, object]]:
    """Each ``data:`` block as JSON, as the SDK decodes it; ``[DONE]`` ends them."""
    found = []
    for block in stream.decode().split("\n\n")[:-1]:
        assert block.startswith("data: ")
        if block == "data: [DONE]":
            break
        found.append(json.loads(block.removeprefix("data: ")))
    return found


@given(st.text())
def test_any_text_is_one_chunk_with_that_content(text: str) -> None:
    wire = openai_wire.ChunkWire("chat", "llama3.2", include_usage=False)
    (chunk,) = chunks(wire.tokens(GENERATION, 0, [token_payload({"text": text})]))
    assert chunk["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": text},
                                 "finish_reason": None}]  # fmt: skip
    assert chunk["id"] == f"chatcmpl-{GENERATION}"
    assert chunk["object"] == "chat.completion.chunk"


@given(st.text())
def test_any_text_completion_chunk(text: str) -> None:
    wire = openai_wire.ChunkWire("text", "llama3.2", include_usage=False)
    (chunk,) = chunks(wire.tokens(GENERATION, 0, [token_payload({"text": text})]))
    assert chunk["choices"] == [{"index": 0, "text": text, "finish_reason": None}]
    assert chunk["object"] == "text_completion"


def test_thinking_tool_calls_the_end_and_usage() -> None:
    wire = openai_wire.ChunkWire("chat", "qwen3", include_usage=True)
    payloads = [
        token_payload({"thinking": "hm"}),
        token_payload({"tool_calls": [{"function": {"name": "f", "arguments": {"q": 1}}}]}),
    ]
    stream = wire.tokens(GENERATION, 0, payloads)
    stream += wire.done(GENERATION, {"done_reason": "stop", "prompt_eval_count": 3,
                                     "eval_count": 2}, cached=False)  # fmt: skip
    thinking, call, last, usage = chunks(stream)
    assert thinking["choices"][0]["delta"]["reasoning"] == "hm"  # type: ignore[index]
    (made,) = call["choices"][0]["delta"]["tool_calls"]  # type: ignore[index]
    assert made == {"index": 0, "id": f"call_{GENERATION[2:]}_0", "type": "function",
                    "function": {"name": "f", "arguments": '{"q":1}'}}  # fmt: skip
    assert last["choices"] == [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert stream.endswith(openai_wire.DONE)


def test_an_error_chunk_in_openais_shape() -> None:
    wire = openai_wire.ChunkWire("chat", "m", include_usage=False)
    error = wire.error(GENERATION, RateLimited("slow down", "requests", retry_after_seconds=1))
    assert json.loads(error.removeprefix(b"data: ")) == {"error": {
        "message": "slow down", "type": "rate_limit_error", "param": None,
        "code": "rate_limited", "quota": "requests"}}  # fmt: skip
