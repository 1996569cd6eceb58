"""OpenAI Responses bodies mapped onto the native request (unit): Codex's and the SDK's."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.openai.responses.requests import conversation, parse
from app.errors import InvalidRequest, Unsupported
from app.generations.request import parse_body

GRAMMAR = {"type": "grammar", "syntax": "lark", "definition": "start: x"}
PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files.",
              "format": GRAMMAR}  # fmt: skip


def test_a_string_input_and_instructions() -> None:
    mapped = parse({"model": "qwen3", "input": "hi", "instructions": "be brief",
                    "temperature": 0.2, "top_p": 0.5, "max_output_tokens": 9})  # fmt: skip
    completion = mapped.completion([], "m", can_think=None)
    assert completion == parse_body({"model": "qwen3", "stream": False, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "options": {"temperature": 0.2, "top_p": 0.5, "num_predict": 9}}, "m")  # fmt: skip
    assert (mapped.store, mapped.background, mapped.stream) == (True, False, False)


def test_codex_items_become_a_conversation() -> None:
    """Developer messages with ids, calls of a function and of a custom tool, their outputs,
    and a reasoning item before the assistant's turn."""
    messages = conversation([
        {"type": "message", "id": "msg_1", "role": "developer",
         "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "edit"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}],
         "encrypted_content": "opaque"},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "exec_command",
         "arguments": '{"cmd": "ls"}', "status": "completed"},
        {"type": "custom_tool_call", "id": "ctc_1", "call_id": "c2", "name": "apply_patch",
         "input": "*** Begin Patch"},
        {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "Success."},
    ])  # fmt: skip
    assert messages == [
        {"role": "system", "content": "You are Codex."},
        {"role": "user", "content": "edit", "images": ["AAAA"]},
        {"role": "assistant", "content": "", "thinking": "hm", "tool_calls": [
            {"function": {"name": "exec_command", "arguments": {"cmd": "ls"}}},
            {"function": {"name": "apply_patch", "arguments": {"input": "*** Begin Patch"}}}]},
        {"role": "tool", "content": "a.txt", "tool_name": "exec_command"},
        {"role": "tool", "content": "Success.", "tool_name": "apply_patch"},
    ]  # fmt: skip


def test_tools_custom_namespaced_and_hosted() -> None:
    """A custom tool reaches the model as a function of one string; a namespace's functions
    are offered one by one; hosted tools, which only OpenAI runs, are not offered."""
    function = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}
    mapped = parse({"input": "x", "tools": [
        function, PATCH_TOOL, {"type": "namespace", "name": "agents", "tools": [
            {"type": "function", "name": "spawn", "parameters": {}}]},
        {"type": "web_search", "external_web_access": False},
        {"type": "tool_search"}]})  # fmt: skip
    names = [tool["function"]["name"] for tool in mapped.native["tools"]]
    assert names == ["exec_command", "apply_patch", "spawn"]
    patch = mapped.native["tools"][1]["function"]
    assert patch["parameters"]["required"] == ["input"]
    assert "start: x" in patch["description"]
    assert (mapped.custom_tools, mapped.namespaces) == (frozenset({"apply_patch"}),
                                                        {"spawn": "agents"})  # fmt: skip
    assert parse({"input": "x", "tools": [function], "tool_choice": "none"}).native == {}


def test_what_codex_sends_besides_the_question_is_accepted() -> None:
    mapped = parse({"model": "gpt-5.5", "input": "hi", "stream": True, "store": False,
                    "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k",
                    "client_metadata": {"x": "y"}, "parallel_tool_calls": True,
                    "text": {"verbosity": "low"}, "reasoning": {"effort": "medium",
                                                                "summary": "auto"}})  # fmt: skip
    assert (mapped.stream, mapped.store, mapped.thinking) == (True, False, "on")
    assert mapped.completion([], "m", can_think=False).think is None
    assert parse({"input": "x", "reasoning": {"effort": "none"}}).thinking == "off"
    assert parse({"input": "x", "text": {"format": {"type": "json_object"}}}).native == {
        "format": "json"
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        pytest.param({"tool_choice": "required"}, "tool_choice", id="required"),
        pytest.param({"conversation": "c"}, "conversation", id="unknown-field"),
        pytest.param({"input": [{"type": "file_search_call"}]}, "input[0].type", id="item"),
        pytest.param({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://x/y.png"}]}]},
                     "input[0].content[0]", id="image-url"),
        pytest.param({"text": {"format": {"type": "xml"}}}, "text.format", id="format"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused_naming_it(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as refused:
        parse({"input": "x", **fields})
    assert refused.value.field == param


@pytest.mark.parametrize(
    "fields",
    [{"input": []}, {"input": 3}, {"temperature": "hot"}, {"stream": "yes"},
     {"reasoning": {"effort": "lots"}}, {"previous_response_id": 7}],
)  # fmt: skip
def test_wrong_values_are_invalid_requests(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        parse({"input": "x", **fields})
