"""Ollama's NDJSON lines, as its official clients read them (unit)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from app.api.ollama import wire as ollama_wire
from app.generations import wire as events

GENERATION = "g_" + "x" * 22


@given(st.text())
def test_any_text_is_one_line_that_splitlines_keeps_whole(text: str) -> None:
    for kind in ("generate", "chat"):
        stream = ollama_wire.LineWire(kind, "llama3.2")
        data = stream.tokens(GENERATION, 0, [events.token_payload({"text": text})])
        (line,) = data.decode().splitlines()  # what httpx's iter_lines does
        parsed = json.loads(line)
        if kind == "generate":
            assert parsed["response"] == text
        else:
            assert parsed["message"] == {"role": "assistant", "content": text}
        assert parsed["model"] == "llama3.2"
        assert parsed["done"] is False
        assert parsed["created_at"].endswith("Z")


def test_thinking_the_end_and_an_error() -> None:
    stream = ollama_wire.LineWire("chat", "qwen3")
    thinking = json.loads(stream.tokens(GENERATION, 0, [events.token_payload({"thinking": "hm"})]))
    assert thinking["message"] == {"role": "assistant", "content": "", "thinking": "hm"}
    done = json.loads(stream.done(GENERATION, {"model": "qwen3", "done_reason": "stop",
                                               "eval_count": 2}, cached=True))  # fmt: skip
    assert done == {"model": "qwen3", "created_at": done["created_at"],
                    "message": {"role": "assistant", "content": ""}, "done": True,
                    "done_reason": "stop", "eval_count": 2}  # fmt: skip
