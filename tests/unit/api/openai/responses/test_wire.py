"""OpenAI Responses' wire format (unit): events numbered from 0 without a gap, whole items in
``response.output_item.done`` (what Codex reads), one end always, and a resume that skips."""

from __future__ import annotations

from typing import Any

from app.api.openai.responses.wire import EventWire, Items, finished
from app.errors import UpstreamError
from app.generations.answer import gather
from app.generations.wire import token_payload
from tests.support import sse

GENERATION = "g_" + "B" * 22
BASE = {"id": "resp_" + "B" * 22, "object": "response", "created_at": 1, "model": "m",
        "output": [], "usage": None}  # fmt: skip
STATS = {"done_reason": "stop", "prompt_eval_count": 5, "eval_count": 3}
ITEMS = Items(frozenset({"apply_patch"}), {"spawn": "agents"})
CALLS = [{"function": {"name": "exec_command", "arguments": {"cmd": "ls"}}},
         {"function": {"name": "apply_patch", "arguments": {"input": "*** Begin Patch"}}},
         {"function": {"name": "spawn", "arguments": {}}}]  # fmt: skip


def events(stream: bytes) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [event.json() for event in sse.events(stream)]
    return found


def whole_stream(wire: EventWire) -> bytes:
    stream = wire.tokens(GENERATION, 0, [token_payload({"thinking": "hm"}),
                                         token_payload({"text": "Hel"})])  # fmt: skip
    stream += wire.tokens(GENERATION, 2, [token_payload({"text": 'lo "x"'}),
                                          token_payload({"tool_calls": CALLS})])  # fmt: skip
    return stream + wire.done(GENERATION, STATS, cached=False)


def test_events_are_numbered_from_zero_and_end_with_the_whole_response() -> None:
    parsed = events(whole_stream(EventWire(BASE, ITEMS)))
    assert [e["sequence_number"] for e in parsed] == list(range(len(parsed)))
    assert [e["type"] for e in parsed[:2]] == ["response.created", "response.in_progress"]
    done = [e["item"] for e in parsed if e["type"] == "response.output_item.done"]
    assert [item["type"] for item in done] == ["reasoning", "message", "function_call",
                                               "custom_tool_call", "function_call"]  # fmt: skip
    assert done[1]["content"][0]["text"] == 'Hello "x"'  # the whole text, which Codex reads
    assert done[3]["input"] == "*** Begin Patch"
    assert done[4]["namespace"] == "agents"
    end = parsed[-1]
    assert end["type"] == "response.completed"
    assert end["response"]["output"] == done
    assert end["response"]["usage"]["total_tokens"] == 8
    deltas = [e["delta"] for e in parsed if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hel", 'lo "x"']


def test_a_resume_sends_the_same_events_after_the_one_named() -> None:
    original = events(whole_stream(EventWire(BASE, ITEMS)))
    resumed = events(whole_stream(EventWire(BASE, ITEMS, skip_through=4)))
    assert resumed == original[5:]


def test_every_stream_ends_with_one_of_its_three_ends() -> None:
    limited = EventWire(BASE, ITEMS).done(GENERATION, {"done_reason": "length"}, cached=False)
    assert events(limited)[-1]["type"] == "response.incomplete"
    assert events(limited)[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    wire = EventWire(BASE, ITEMS)
    failed = wire.tokens(GENERATION, 0, [token_payload({"text": "par"})])
    failed += wire.error(GENERATION, UpstreamError("cut"))
    end = events(failed)[-1]
    assert end["type"] == "response.failed"
    assert end["response"]["error"] == {"code": "server_error", "message": "cut"}
    assert end["response"]["output"][0]["content"][0]["text"] == "par"  # what came is kept


def test_a_whole_answer_has_the_streams_items() -> None:
    payloads = [token_payload({"thinking": "hm"}), token_payload({"text": 'Hello "x"'}),
                token_payload({"tool_calls": CALLS})]  # fmt: skip
    answer = gather("chat", "m", payloads, STATS, cached=False)
    whole = finished(BASE, ITEMS.output(GENERATION, answer), STATS)
    streamed = events(whole_stream(EventWire(BASE, ITEMS)))[-1]["response"]
    assert whole["output"] == streamed["output"]
    assert whole["status"] == streamed["status"] == "completed"


def test_a_kept_replay_serves_hits_made_in_a_later_second() -> None:
    """Hits differ only in ``created_at`` each second: were it in the key, a worker would keep
    four replays and build every later hit's stream anew."""
    later = EventWire({**BASE, "created_at": 2}, ITEMS)
    assert later.replay_key == EventWire(BASE, ITEMS).replay_key
    assert later.replay_key != EventWire({**BASE, "model": "other"}, ITEMS).replay_key
    assert later.replay_key != EventWire(BASE, ITEMS, skip_through=3).replay_key
