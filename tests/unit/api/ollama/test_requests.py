"""Ollama's request bodies as the native request: what is refused naming it, and ``raw``."""

from __future__ import annotations

import pytest

from app.api.ollama.requests import parse
from app.errors import InvalidRequest, Unsupported


def test_raw_is_the_prompt_as_it_is_and_a_content_of_its_own() -> None:
    raw = parse("generate", {"model": "m", "prompt": "Once upon", "raw": True}, "d")
    templated = parse("generate", {"model": "m", "prompt": "Once upon"}, "d")
    assert raw.raw
    assert raw.content() == {**templated.content(), "raw": True}  # another cache entry
    assert parse("generate", {"model": "m", "prompt": "Once upon", "raw": False}, "d") == templated


@pytest.mark.parametrize(("kind", "body", "field"), [
    ("generate", {"prompt": "x", "suffix": "y"}, "suffix"),
    ("generate", {"prompt": "x", "template": "{{ .Prompt }}"}, "template"),
    ("chat", {"messages": [{"role": "user", "content": "x"}], "raw": True}, "raw"),
])  # fmt: skip
def test_what_cannot_be_honoured_is_refused_naming_it(kind: str, body: dict[str, object],
                                                      field: str) -> None:  # fmt: skip
    with pytest.raises(Unsupported) as refused:
        parse(kind, body, "d")  # type: ignore[arg-type]  # a Kind, as the parameters say
    assert refused.value.field == field


def test_raw_must_be_a_boolean() -> None:
    with pytest.raises(InvalidRequest):
        parse("generate", {"prompt": "x", "raw": "yes"}, "d")
