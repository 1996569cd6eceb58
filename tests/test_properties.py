"""Properties over generated inputs (hypothesis): the SSE encoding and the cache key."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.api.native import events
from app.generations.cache import content_hash
from app.generations.request import parse_body
from app.generations.wire import token_payload
from tests import helpers

# any Unicode text a model could emit, lone surrogates excepted (they are not valid UTF-8)
texts = st.text(st.characters(exclude_categories=["Cs"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@given(st.lists(texts, max_size=8), st.integers(0, 10**6))
def test_any_token_text_round_trips_through_a_browser_parser(tokens: list[str], first: int) -> None:
    stream = events.tokens("g_x", first, [token_payload({"text": t}) for t in tokens])
    parsed = helpers.events(stream)
    assert [e.json()["text"] for e in parsed] == tokens
    assert [e.last_event_id for e in parsed] == [
        f"g_x.{n}" for n in range(first, first + len(tokens))
    ]
    assert {e.type for e in parsed} <= {"token"}


@given(texts, texts, st.lists(st.dictionaries(texts, json_values, max_size=3), max_size=2))
def test_thinking_and_tool_calls_round_trip(text: str, thinking: str, calls: list[Any]) -> None:
    fields = {"text": text, "thinking": thinking, "tool_calls": calls}
    (event,) = helpers.events(events.tokens("g_x", 0, [token_payload(fields)]))
    assert event.json() == fields


@given(st.dictionaries(st.text(min_size=1), json_values, max_size=6), texts)
def test_the_key_ignores_the_order_of_keys(options: dict[str, Any], prompt: str) -> None:
    reordered = dict(reversed(list(options.items())))
    a = parse_body({"prompt": prompt, "options": options}, "m")
    b = parse_body({"options": reordered, "prompt": prompt}, "m")
    assert content_hash(a) == content_hash(b)


@given(texts, texts)
def test_the_key_differs_when_the_prompt_does(a: str, b: str) -> None:
    same = content_hash(parse_body({"prompt": a}, "m")) == content_hash(
        parse_body({"prompt": b}, "m")
    )
    assert same == (a == b)
