"""Anthropic Messages bodies mapped onto the native request, field by field (unit)."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.anthropic.requests import estimate_tokens, parse
from app.errors import InvalidRequest, Unsupported
from app.generations.request import parse_body

USER = {"role": "user", "content": "hi"}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "qwen3", "max_tokens": 64, "messages": [USER], **fields}


def test_options_system_and_stop_sequences_map_onto_ollamas() -> None:
    mapped = parse(body(system=[{"type": "text", "text": "be brief",
                                 "cache_control": {"type": "ephemeral"}},
                                {"type": "text", "text": "be kind"}],
                        temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["END"]))  # fmt: skip
    completion = mapped.completion("m", can_think=None)
    assert completion.options == {"temperature": 0.2, "top_p": 0.9, "top_k": 5,
                                  "num_predict": 64, "stop": ["END"]}  # fmt: skip
    assert completion.messages == ({"role": "system", "content": "be brief\nbe kind"}, USER)
    assert completion.stream is False  # Anthropic's default


def test_the_same_question_is_the_same_native_request() -> None:
    """A question asked here and natively with the same content is one cache entry."""
    native = parse_body({"model": "qwen3", "messages": [USER], "options": {"num_predict": 64},
                         "stream": False}, "m")  # fmt: skip
    assert parse(body()).completion("m", can_think=None) == native


def test_blocks_become_ollamas_messages() -> None:
    """Tool uses and results, thinking, images and Claude Code's system-role messages."""
    mapped = parse(body(messages=[
        {"role": "user", "content": [{"type": "text", "text": "what is"},
                                     {"type": "text", "text": "this?"},
                                     {"type": "image", "source": {"type": "base64",
                                      "media_type": "image/png", "data": "AAAA"}}]},
        {"role": "system", "content": "# Environment", "output_config": {"effort": "high"}},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "c2ln"},
            {"type": "text", "text": "I'll look."},
            {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"at": "it"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a bottle",
             "is_error": False, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "and now?"}]},
    ]))  # fmt: skip
    assert mapped.native["messages"] == [
        {"role": "user", "content": "what is\nthis?", "images": ["AAAA"]},
        {"role": "system", "content": "# Environment"},
        {"role": "assistant", "thinking": "hm", "content": "I'll look.",
         "tool_calls": [{"function": {"name": "look", "arguments": {"at": "it"}}}]},
        {"role": "tool", "content": "a bottle", "tool_name": "look"},
        {"role": "user", "content": "and now?"},
    ]  # fmt: skip


def test_tools_and_thinking() -> None:
    tool = {"name": "f", "description": "d", "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"}, "defer_loading": True}  # fmt: skip
    mapped = parse(body(tools=[tool], thinking={"type": "adaptive", "display": "omitted"}))
    assert mapped.native["tools"] == [{"type": "function", "function": {
        "name": "f", "description": "d", "parameters": {"type": "object"}}}]  # fmt: skip
    assert (mapped.thinking, mapped.show_thinking) == ("on", False)
    assert mapped.completion("m", can_think=True).think is True
    assert mapped.completion("m", can_think=None).think is True  # unknown: asked as given
    assert mapped.completion("m", can_think=False).think is None  # a model that cannot think
    assert parse(body(tools=[tool], tool_choice={"type": "none"})).native.get("tools") is None
    disabled = parse(body(thinking={"type": "disabled"}))
    assert disabled.completion("m", can_think=True).think is False
    budget = parse(body(thinking={"type": "enabled", "budget_tokens": 1024}))
    assert (budget.thinking, budget.show_thinking) == ("on", True)


def test_what_only_tunes_anthropics_service_is_ignored() -> None:
    """What Claude Code sends besides the question changes nothing."""
    mapped = parse(body(metadata={"user_id": "{}"}, service_tier="auto",
                        context_management={"edits": []},
                        output_config={"effort": "low"}))  # fmt: skip
    assert mapped.completion("m", can_think=None) == parse(body()).completion("m", can_think=None)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        pytest.param({"tool_choice": {"type": "any"}}, "tool_choice", id="any"),
        pytest.param({"tool_choice": {"type": "tool", "name": "f"}}, "tool_choice", id="named"),
        pytest.param({"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
                     "tool_choice.disable_parallel_tool_use", id="one-call"),
        pytest.param({"mcp_servers": []}, "mcp_servers", id="mcp"),
        pytest.param({"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
                     "tools[0].type", id="server-tool"),
        pytest.param({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]},
                     "messages[0].content[0].source", id="image-url"),
        pytest.param({"messages": [{"role": "user", "content": [
            {"type": "document", "source": {}}]}]}, "messages[0].content[0]", id="document"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused_naming_it(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as refused:
        parse(body(**fields))
    assert refused.value.field == param


@pytest.mark.parametrize(
    "fields",
    [{"max_tokens": 0}, {"max_tokens": None}, {"temperature": "hot"}, {"messages": []},
     {"thinking": {"type": "sometimes"}}, {"stop_sequences": "END"},
     {"messages": [{"role": "robot", "content": "x"}]}],
)  # fmt: skip
def test_wrong_values_are_invalid_requests(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        parse(body(**fields))


def test_count_tokens_is_a_quarter_of_the_characters() -> None:
    counted = parse({"model": "m", "messages": [{"role": "user", "content": "x" * 40}],
                     "system": "y" * 20}, counting=True)  # fmt: skip
    assert estimate_tokens(counted) == 15
