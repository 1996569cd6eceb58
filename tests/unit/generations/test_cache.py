"""Cache entries and the canonical content key, over generated inputs too (hypothesis)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.api.anthropic.wire import MessageWire
from app.api.native.events import NATIVE
from app.api.ollama import wire as ollama_wire
from app.api.openai import wire as openai_wire
from app.api.openai.responses.wire import EventWire, Items
from app.generations.cache import CachedCompletion, LocalCopies, content_hash, decode, encode
from app.generations.feeds import MAX_ENDS_BYTES, MAX_FRAMING_BYTES, CachedFeed
from app.generations.request import parse_body
from app.generations.wire import Wire, token_payload
from tests.support.strategies import json_values, texts


def test_entries_round_trip_byte_for_byte() -> None:
    payloads = [b'{"text":"a\\nb"}', b'{"text":"\xe2\x80\xa8"}', b'{"thinking":"x"}']
    completion = CachedCompletion("g_x", "chat", "llama3.2", payloads, {"done_reason": "stop"})
    assert decode(encode(completion)) == completion


def test_an_empty_completion_round_trips() -> None:
    completion = CachedCompletion("g_x", "generate", "m", [], {"eval_count": 0})
    assert decode(encode(completion)) == completion


@pytest.mark.parametrize("entry", [b"", b"not json", b'{"generation": "g"}', b"[1]\n{}"])
def test_foreign_entries_are_refused(entry: bytes) -> None:
    with pytest.raises(ValueError, match="not a cache entry"):
        decode(entry)


def test_key_ignores_key_order_and_delivery_choices() -> None:
    a = parse_body({"prompt": "p", "options": {"seed": 1, "temperature": 0}}, "m")
    b = parse_body(
        {"options": {"temperature": 0, "seed": 1}, "stream": False, "cache": True,
         "keep_alive": "1m", "prompt": "p"},
        "m",
    )  # fmt: skip
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 64


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"prompt": "q"}, id="prompt"),
        pytest.param({"model": "other"}, id="model"),
        pytest.param({"system": "s"}, id="system"),
        pytest.param({"options": {"seed": 2}}, id="option"),
        pytest.param({"format": "json"}, id="format"),
        pytest.param({"think": True}, id="think"),
    ],
)
def test_key_changes_with_content(changed: dict[str, object]) -> None:
    base = {"prompt": "p", "options": {"seed": 1}}
    assert content_hash(parse_body(base, "m")) != content_hash(parse_body({**base, **changed}, "m"))


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


def test_prompt_and_chat_never_share_a_key() -> None:
    prompt = parse_body({"prompt": "hi"}, "m")
    chat = parse_body({"messages": [{"role": "user", "content": "hi"}]}, "m")
    assert content_hash(prompt) != content_hash(chat)


def test_local_copies_expire_with_the_shorter_ttl() -> None:
    copies: LocalCopies[str] = LocalCopies(max_seconds=10)
    copies.put("a", "entry a", size=1, ttl_seconds=0.05)  # the Redis entry ends sooner
    copies.put("b", "entry b", size=1, ttl_seconds=3600)
    assert (copies.get("a"), copies.get("b")) == ("entry a", "entry b")
    time.sleep(0.1)
    assert (copies.get("a"), copies.get("b")) == (None, "entry b")


def test_local_copies_stay_within_their_bytes_least_recently_used_first() -> None:
    copies: LocalCopies[str] = LocalCopies(max_seconds=10, max_bytes=10)
    copies.put("a", "a", size=4, ttl_seconds=60)
    copies.put("b", "b", size=4, ttl_seconds=60)
    assert copies.get("a") == "a"  # now b is the least recently used
    copies.put("c", "c", size=4, ttl_seconds=60)
    assert (copies.get("a"), copies.get("b"), copies.get("c")) == ("a", None, "c")
    copies.put("huge", "x", size=11, ttl_seconds=60)
    assert copies.get("huge") is None


def test_local_copies_can_be_turned_off() -> None:
    copies: LocalCopies[str] = LocalCopies(max_seconds=0)
    copies.put("a", "a", size=1, ttl_seconds=60)
    assert copies.get("a") is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_expired_copies_leave_memory_without_being_asked_for_again() -> None:
    """Issue 12: a worker's copies of one-off answers stayed until the byte bound pushed them
    out, so memory grew with every new prompt and never levelled off."""
    clock = Clock()
    copies: LocalCopies[str] = LocalCopies(max_seconds=10, clock=clock)
    most = 0
    for second in range(100):  # ten new answers a second, each asked for once
        clock.now += 1
        for n in range(10):
            copies.put(f"{second}-{n}", "entry", size=100, ttl_seconds=3600)
        most = max(most, len(copies))
    assert most == 100  # ten seconds of answers: what CACHE_LOCAL_SECONDS keeps
    assert copies.held_bytes == 100 * 100
    clock.now += 10
    assert copies.get("anything") is None
    assert (len(copies), copies.held_bytes) == (0, 0)


def test_a_copy_replaced_or_evicted_early_does_not_expire_its_successor() -> None:
    clock = Clock()
    copies: LocalCopies[str] = LocalCopies(max_seconds=10, clock=clock)
    copies.put("a", "first", size=1, ttl_seconds=2)
    clock.now += 1
    copies.put("a", "second", size=1, ttl_seconds=60)  # expires 9 s after the first would
    clock.now += 5
    assert copies.get("a") == "second"
    assert copies.held_bytes == 1


def test_a_copy_costs_what_it_holds_replay_included() -> None:
    """The byte bound counts the payloads as objects and the replay a hit builds, not the
    encoded entry alone (several times less than what a copy holds)."""
    payloads = [b'{"text":"%d"}' % n for n in range(500)]
    completion = CachedCompletion("g_" + "x" * 22, "generate", "m", payloads, {"eval_count": 500})
    feed = CachedFeed(completion)
    held = feed.held_bytes
    replay = feed.replay(0, NATIVE).data
    assert held >= len(replay) + sum(len(p) for p in payloads)
    assert held > 3 * len(encode(completion))


def test_a_copy_keeps_one_replay_per_surface_and_counts_them() -> None:
    payloads = [token_payload({"text": f" {n}"}) for n in range(50)]
    completion = CachedCompletion("g_" + "x" * 22, "chat", "m", payloads, {"eval_count": 50})
    feed = CachedFeed(completion)
    wires: list[Wire] = [NATIVE, openai_wire.ChunkWire("chat", "m", include_usage=True),
                         openai_wire.ChunkWire("chat", "m", include_usage=False),
                         ollama_wire.LineWire("chat", "m")]  # fmt: skip
    replays = [feed.replay(0, wire).data for wire in wires]
    again = openai_wire.ChunkWire("chat", "m", include_usage=True)  # another response's wire
    assert feed.replay(0, again).data is replays[1]  # kept: encoded once for every hit
    assert feed.held_bytes >= sum(map(len, replays)) + sum(map(len, payloads))
    one_more = openai_wire.ChunkWire("text", "m", include_usage=False)  # past the four kept
    assert feed.replay(0, one_more).data is not feed.replay(0, one_more).data


def every_wire(model: str) -> list[Wire]:
    """A wire of every surface, each way it can be asked for."""
    wires: list[Wire] = [NATIVE]
    for endpoint in ("chat", "text"):
        wires += [openai_wire.ChunkWire(endpoint, model, include_usage=usage)
                  for usage in (True, False)]  # fmt: skip
    wires += [ollama_wire.LineWire(kind, model) for kind in ("chat", "generate")]
    wires += [MessageWire(model, show_thinking=show) for show in (True, False)]
    base = {"id": "resp_" + "x" * 22, "object": "response", "created_at": 1, "model": model}
    wires.append(EventWire(base, Items(frozenset(), {})))
    return wires


@pytest.mark.parametrize("model", ["m", "x" * 128])
def test_no_surface_frames_a_token_in_more_than_a_copy_counts(model: str) -> None:
    """A worker's copy counts ``MAX_FRAMING_BYTES`` and the model's name for each token of each
    replay it keeps, and ``MAX_ENDS_BYTES`` for its start and end; every surface's wire must
    frame a token (once its stream has begun) in no more, or copies would hold more memory
    than they are counted for."""
    generation, empty = "g_" + "x" * 22, token_payload({"text": ""})
    for wire in every_wire(model):
        started = wire.tokens(generation, 0, [empty])
        framing = len(wire.tokens(generation, 999_999_999, [empty])) - len(empty)
        assert framing <= MAX_FRAMING_BYTES + len(model), wire
        ends = len(started) - len(empty) + len(wire.done(generation, {}, cached=True))
        assert ends - framing <= MAX_ENDS_BYTES + len(model), wire


def test_a_replay_larger_than_a_copy_counts_is_built_anew_not_kept() -> None:
    """A Responses stream echoes the request's tools in its first and last events: with
    Codex's, far more than a copy counts, so such a replay is not kept."""
    payloads = [token_payload({"text": f" {n}"}) for n in range(5)]
    feed = CachedFeed(CachedCompletion("g_" + "x" * 22, "chat", "m", payloads, {}))
    small = EventWire({"id": "resp_" + "x" * 22, "model": "m", "tools": []}, Items(frozenset(), {}))
    echoed = {"id": "resp_" + "x" * 22, "model": "m", "tools": [{"description": "x" * 40_000}]}
    large = EventWire(echoed, Items(frozenset(), {}))
    assert feed.replay(0, small) is feed.replay(0, small)
    assert feed.replay(0, large) is not feed.replay(0, large)
