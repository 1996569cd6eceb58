"""One question, five surfaces, one generation: Anthropic's Messages, OpenAI's Responses and
Chat Completions, Ollama's ``/api/chat`` and the native API all map onto the same native
request (``CompletionRequest.content()``), so the same content and options are one cache entry
and one running generation, whichever surface asks first.

What makes them the same native request: Messages requires ``max_tokens`` (``num_predict``),
so every other surface asks for the same ``num_predict`` (Responses' ``max_output_tokens``,
Chat Completions' ``max_tokens``, ``options`` elsewhere); a system prompt (Messages'
``system``, Responses' ``instructions``) is a first ``system`` message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from harness import servers
from harness.servers import Server, simulator_counters
from tests.support import sse
from tests.support.bodies import simulator_chat_text, unique

pytestmark = pytest.mark.system
SYSTEM = "answer in a few words"
LIMIT = 64
SURFACES = ("messages", "responses", "chat-completions", "ollama", "native")


def asked(question: str, *, stream: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """The same question (a system prompt, a user's turn, at most ``LIMIT`` tokens) as each
    surface asks it."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return {
        "messages": ("/v1/messages", {
            "model": "llama3.2", "max_tokens": LIMIT, "system": SYSTEM, "stream": stream,
            "messages": [{"role": "user", "content": question}]}),
        "responses": ("/v1/responses", {
            "model": "llama3.2", "max_output_tokens": LIMIT, "instructions": SYSTEM,
            "input": question, "stream": stream}),
        "chat-completions": ("/v1/chat/completions", {
            "model": "llama3.2", "max_tokens": LIMIT, "messages": messages, "stream": stream}),
        "ollama": ("/api/chat", {
            "model": "llama3.2", "options": {"num_predict": LIMIT}, "messages": messages,
            "stream": stream}),
        "native": ("/v1/chats/generate", {
            "model": "llama3.2", "options": {"num_predict": LIMIT}, "messages": messages,
            "stream": stream}),
    }  # fmt: skip


# the answer's text in each surface's whole (JSON) answer
TEXT: dict[str, Callable[[Any], str]] = {
    "messages": lambda body: body["content"][0]["text"],
    "responses": lambda body: body["output"][0]["content"][0]["text"],
    "chat-completions": lambda body: body["choices"][0]["message"]["content"],
    "ollama": lambda body: body["message"]["content"],
    "native": lambda body: body["response"],
}


def engine_text(simulator: Server, question: str) -> str:
    """What Ollama itself answers to the native request every surface makes of ``question``."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return simulator_chat_text(simulator, {"model": "llama3.2", "messages": messages,
                                           "options": {"num_predict": LIMIT}})  # fmt: skip


@pytest.mark.parametrize("first", SURFACES)
def test_the_same_question_is_one_cache_entry_whichever_surface_asks_first(
    service: Server, simulator: Server, first: str
) -> None:
    question = unique(f"five surfaces, {first} first")
    bodies = asked(question, stream=False)
    order = [first, *(surface for surface in SURFACES if surface != first)]
    before = simulator_counters(simulator)["started"]
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=service.url, timeout=20) as http:
        for surface in order:
            path, body = bodies[surface]
            answers[surface] = http.post(path, json=body)
            assert answers[surface].status_code == 200, answers[surface].text
    assert [answers[s].headers["x-cache"] for s in order] == ["MISS"] + ["HIT"] * 4
    assert simulator_counters(simulator)["started"] == before + 1
    assert len({a.headers["x-generation-id"] for a in answers.values()}) == 1
    texts = {surface: TEXT[surface](answers[surface].json()) for surface in SURFACES}
    assert set(texts.values()) == {engine_text(simulator, question)}


def streamed_text(surface: str, body: bytes) -> str:
    """The answer's text in a Messages or Responses stream."""
    events = sse.events(body)
    if surface == "messages":
        deltas = [e.json()["delta"] for e in events if e.type == "content_block_delta"]
        return "".join(d["text"] for d in deltas if d["type"] == "text_delta")
    return "".join(e.json()["delta"] for e in events if e.type == "response.output_text.delta")


@pytest.mark.anyio
async def test_identical_streams_at_once_through_every_surface_join_one_generation(
    start_service: Callable[..., Server],
) -> None:
    """Five identical streamed requests at once, Messages and Responses among them, on a
    simulator slow enough (12 tokens 0.1 s apart) that they overlap: one generation, one
    ``MISS`` and four ``JOINED``, the same text in both new surfaces' wires."""
    slow = servers.simulator("--tokens", "12", "--token-delay", "0.1").start()
    try:
        service = start_service(OLLAMA_HOST=slow.url)
        question = unique("joined")
        bodies = asked(question, stream=True)
        received: dict[str, sse.Received] = {}

        async def one(surface: str) -> None:
            path, body = bodies[surface]
            received[surface] = await sse.fetch_from(service, "POST", path, json=body)

        async with anyio.create_task_group() as group:
            for surface in SURFACES:
                group.start_soon(one, surface)
        assert simulator_counters(slow)["started"] == 1
        assert len({r.headers["x-generation-id"] for r in received.values()}) == 1
        assert sorted(r.headers["x-cache"] for r in received.values()) == [
            "JOINED", "JOINED", "JOINED", "JOINED", "MISS"]  # fmt: skip
        reference = engine_text(slow, question)
        assert streamed_text("messages", received["messages"].body) == reference
        assert streamed_text("responses", received["responses"].body) == reference
    finally:
        slow.stop()
