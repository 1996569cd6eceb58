"""Request validation: what is accepted, what is refused and how it is reported."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import InvalidRequest
from app.generations.request import CompletionRequest, parse_body, parse_query
from app.upstream.ollama import request_body


def test_seed_body_keeps_working() -> None:
    request = parse_body({"model": "llama3.2", "prompt": "Hi"}, "other")
    assert request == CompletionRequest(model="llama3.2", prompt="Hi")
    assert request.kind == "generate"


def test_model_defaults() -> None:
    assert parse_body({"prompt": "Hi"}, "llama3.2").model == "llama3.2"


def test_messages_make_a_chat_and_pass_everything_through() -> None:
    body = {
        "model": "qwen3:8b",
        "messages": [{"role": "user", "content": "Hi", "images": ["aGk="]}],
        "options": {"temperature": 0},
        "format": {"type": "object"},
        "think": True,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "keep_alive": "5m",
    }
    request = parse_body(body, "llama3.2")
    assert request.kind == "chat"
    assert request_body(request) == {**body, "stream": True}  # what Ollama is sent


def test_content_leaves_out_delivery_choices() -> None:
    """stream, cache and keep_alive do not change the answer, so they are not content."""
    a = parse_body({"prompt": "x", "stream": False, "cache": False, "keep_alive": 0}, "m")
    b = parse_body({"prompt": "x"}, "m")
    assert a.content() == b.content() == {"kind": "generate", "model": "m", "prompt": "x"}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param({}, {"prompt"}, id="neither"),
        pytest.param(
            {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, {"prompt"}, id="both"
        ),
        pytest.param({"messages": []}, {"messages"}, id="empty-messages"),
        pytest.param({"prompt": 1}, {"prompt"}, id="prompt-type"),
        pytest.param({"prompt": "a", "model": ""}, {"model"}, id="empty-model"),
        pytest.param({"prompt": "a", "model": "a b"}, {"model"}, id="model-space"),
        pytest.param({"prompt": "a", "model": "x" * 129}, {"model"}, id="model-long"),
        pytest.param({"prompt": "a", "format": "xml"}, {"format"}, id="format"),
        pytest.param({"prompt": "a", "think": "yes"}, {"think"}, id="think"),
        pytest.param({"prompt": "a", "keep_alive": True}, {"keep_alive"}, id="keep-alive"),
        pytest.param({"prompt": "a", "tools": []}, {"tools"}, id="tools-without-chat"),
        pytest.param({"prompt": "a", "seed": 1}, {"seed"}, id="unknown-field"),
        pytest.param(
            {"messages": [{"role": "robot", "content": 1, "x": 0}, "hi"]},
            {"messages", "messages[0].role", "messages[0].content", "messages[0].x"},
            id="messages",
        ),
        pytest.param({"messages": [{"content": "a"}]}, {"messages[0].role"}, id="no-role"),
    ],
)
def test_invalid_bodies_name_each_field(body: dict[str, Any], fields: set[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_body(body, "llama3.2")
    assert set(caught.value.fields) == fields
    assert caught.value.problem()["fields"] == caught.value.fields


def test_query_carries_the_browser_fields_and_ignores_others() -> None:
    request = parse_query(
        {"prompt": "hi", "system": "s", "cache": "false", "stream": "1", "_": "123"}, "m"
    )
    assert request == CompletionRequest(model="m", prompt="hi", system="s", cache=False)


def test_query_booleans_are_checked() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_query({"prompt": "hi", "cache": "perhaps"}, "m")
    assert caught.value.fields == {"cache": "must be true or false"}
