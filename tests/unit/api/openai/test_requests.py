"""OpenAI request bodies mapped onto the native request, field by field (unit)."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.openai.requests import parse_chat, parse_embeddings, parse_text
from app.errors import InvalidRequest, Unsupported
from app.generations.request import parse_body

USER = {"role": "user", "content": "hi"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": [USER], **fields}


def test_options_stop_and_tokens_map_onto_ollamas() -> None:
    asked = parse_chat(chat(temperature=0.2, top_p=0.9, seed=7, max_tokens=5, stop="END",
                            frequency_penalty=0.1, presence_penalty=0.3,
                            options={"num_ctx": 4096, "temperature": 1.0}), "m")  # fmt: skip
    assert asked.completion.options == {
        "num_ctx": 4096, "temperature": 0.2, "top_p": 0.9, "seed": 7, "num_predict": 5,
        "stop": ["END"], "frequency_penalty": 0.1, "presence_penalty": 0.3}  # fmt: skip
    assert asked.completion.stream is False  # OpenAI's default
    assert parse_chat(chat(max_completion_tokens=3), "m").completion.options == {"num_predict": 3}


def test_the_same_question_is_the_same_native_request() -> None:
    native = parse_body({"model": "llama3.2", "messages": [USER], "stream": False}, "m")
    assert parse_chat(chat(), "m").completion == native


def test_messages_become_ollamas() -> None:
    asked = parse_chat({"messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is"},
                                     {"type": "text", "text": "this?"},
                                     {"type": "image_url",
                                      "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "look", "arguments": '{"at": "it"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a bottle"},
    ]}, "llama3.2")  # fmt: skip
    assert asked.completion.model == "llama3.2"
    assert asked.completion.messages == (
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is\nthis?", "images": ["AAAA"]},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "look", "arguments": {"at": "it"}}}]},
        {"role": "tool", "content": "a bottle", "tool_name": "look"},
    )  # fmt: skip


def test_formats_tools_and_reasoning() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert parse_chat(chat(response_format={"type": "json_object"}), "m").completion.format == (
        "json"
    )
    schema = {"type": "object"}
    wanted = {"type": "json_schema", "json_schema": {"schema": schema}}
    structured = parse_chat(chat(response_format=wanted), "m")
    assert structured.completion.format == schema
    assert parse_chat(chat(tools=tools), "m").completion.tools == tuple(tools)
    assert parse_chat(chat(tools=tools, tool_choice="none"), "m").completion.tools is None
    assert parse_chat(chat(reasoning_effort="none"), "m").completion.think is False
    assert parse_chat(chat(reasoning={"effort": "high"}), "m").completion.think == "high"
    assert parse_chat(chat(stream=True, stream_options={"include_usage": True}),
                      "m").include_usage is True  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"stream_options": {"include_obfuscation": True}}, "stream_options"),
        ({"audio": {}}, "audio"),
        ({"messages": [{"role": "user", "name": "x", "content": "hi"}]}, "messages[0].name"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
         "messages[0].content"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused_naming_it(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as refused:
        parse_chat(chat(**fields), "m")
    assert refused.value.field == param
    assert refused.value.status_code == 400


@pytest.mark.parametrize(
    "fields",
    [{"temperature": "hot"}, {"messages": []}, {"reasoning_effort": "lots"},
     {"options": []}, {"messages": [{"role": "assistant", "content": "",
                                     "tool_calls": [{"function": {"arguments": "{"}}]}]}],
)  # fmt: skip
def test_wrong_types_are_the_native_422(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        parse_chat(chat(**fields), "m")


def test_text_completions_and_embeddings() -> None:
    assert parse_text({"prompt": "p", "max_tokens": 2}, "m").completion.prompt == "p"
    with pytest.raises(Unsupported):
        parse_text({"prompt": ["a", "b"]}, "m")
    with pytest.raises(Unsupported):
        parse_text({"prompt": "p", "echo": True}, "m")
    with pytest.raises(InvalidRequest):
        parse_text({"prompt": 3}, "m")
    embedding, encoding = parse_embeddings({"input": "x", "dimensions": 4}, "m")
    assert (embedding.body, encoding) == ({"model": "m", "input": ["x"], "dimensions": 4},
                                          "float")  # fmt: skip
    with pytest.raises(Unsupported):
        parse_embeddings({"input": "x", "encoding_format": "int8"}, "m")
