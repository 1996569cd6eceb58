"""The real ``openai`` SDK's Responses API (``client.responses``) against the real app over
sockets: created whole and streamed, stored in Redis and so continued, retrieved and streamed
again on another replica, in the background, cancelled, deleted, and with the function and
custom tools Codex offers.

The Responses API has no ``options`` to direct the simulator, so the test that needs a slow
Ollama starts a simulator of its own and an app in front of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ToolParam

from harness import servers
from harness.servers import Server, simulator_counters
from tests.support.bodies import simulator_chat_text, unique
from tests.support.sdks import SDK

pytestmark = pytest.mark.system

ENDED = ("completed", "incomplete", "failed", "cancelled")
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hi from apply_patch\n*** End Patch\n"


@pytest.fixture(scope="module")
def replicas(service_env: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    """Two separate app processes (replicas) on one Redis and one simulator."""
    first = servers.app(service_env).start("/livez")
    second = servers.app(service_env).start("/livez")
    yield first, second
    first.stop()
    second.stop()


def settled(client: openai.OpenAI, response_id: str, seconds: float = 10) -> Response:
    """The response once it has ended, polled as a client of a background response does."""
    deadline = time.monotonic() + seconds
    while True:
        response = client.responses.retrieve(response_id)
        if response.status in ENDED:
            return response
        assert time.monotonic() < deadline, f"still {response.status}"
        time.sleep(0.05)


def unparsed(response: Response) -> list[dict[str, Any]]:
    """The output items of a response the stream helper parsed, as a plain response has them
    (the helper adds ``parsed`` to each text part)."""
    return [item.model_dump(exclude={"content": {"__all__": {"parsed"}}})
            for item in response.output]  # fmt: skip


def test_streamed_then_whole_is_what_the_engine_says(
    service: Server, simulator: Server, sdk: SDK
) -> None:
    client = sdk(service)
    question = unique("responses")
    with client.responses.stream(model="llama3.2", input=question) as stream:
        events = list(stream)
        streamed = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    native = {"model": "llama3.2", "messages": [{"role": "user", "content": question}]}
    assert text == simulator_chat_text(simulator, native)
    assert streamed.output_text == text
    assert streamed.status == "completed"
    assert [item.type for item in streamed.output] == ["message"]
    assert streamed.usage is not None
    assert streamed.usage.output_tokens == 12
    assert streamed.id.startswith("resp_")
    raw = client.responses.with_raw_response.create(model="llama3.2", input=question)
    assert raw.headers["x-cache"] == "HIT"  # the stream's generation, from the cache
    whole = raw.parse()
    assert whole.id == streamed.id
    assert [item.model_dump() for item in whole.output] == unparsed(streamed)
    assert whole.usage == streamed.usage


@pytest.mark.parametrize(
    ("model", "kinds"),
    [pytest.param("qwen3", ["reasoning", "message"], id="thinks"),
     pytest.param("llama3.2", ["message"], id="cannot-think")],
)  # fmt: skip
def test_reasoning_where_the_model_can_and_none_where_it_cannot(
    service: Server, sdk: SDK, model: str, kinds: list[str]
) -> None:
    response = sdk(service).responses.create(
        model=model, input=f"{unique('reason')} [sim: say reasoned]",
        reasoning={"effort": "high"})  # fmt: skip
    assert [item.type for item in response.output] == kinds
    assert response.output_text == " reasoned"
    if "reasoning" in kinds:
        reasoning = response.output[0]
        assert reasoning.type == "reasoning"
        assert [part.text for part in reasoning.summary] == [" Let me think."]


@pytest.mark.cluster
def test_continued_retrieved_and_streamed_again_on_another_replica(
    replicas: tuple[Server, Server], sdk: SDK
) -> None:
    first, second = (sdk(replica) for replica in replicas)
    question = unique("replicas")
    original = list(first.responses.create(model="llama3.2", input=question, stream=True))
    completed = original[-1]
    assert completed.type == "response.completed"
    created = completed.response
    retrieved = second.responses.retrieve(created.id)
    assert retrieved == created
    after = 3
    again = list(second.responses.retrieve(created.id, stream=True, starting_after=after))
    assert [e.model_dump() for e in again] == [e.model_dump() for e in original[after + 1 :]]
    whole = list(second.responses.retrieve(created.id, stream=True))
    assert [e.model_dump() for e in whole] == [e.model_dump() for e in original]
    continued = second.responses.create(model="llama3.2", previous_response_id=created.id,
                                        input="[sim: say and so on]")  # fmt: skip
    assert continued.output_text == " and so on"
    assert continued.previous_response_id == created.id
    conversation = [{"role": "user", "content": question},
                    {"role": "assistant", "content": created.output_text},
                    {"role": "user", "content": "[sim: say and so on]"}]  # fmt: skip
    native = httpx.post(replicas[0].url + "/v1/chats/generate",
                        json={"messages": conversation, "stream": False}, timeout=20)  # fmt: skip
    assert native.headers["x-cache"] == "HIT"  # exactly that conversation was answered
    assert native.headers["x-generation-id"] == "g_" + continued.id.removeprefix("resp_")


def test_background_is_queued_then_completed(service: Server, simulator: Server, sdk: SDK) -> None:
    client = sdk(service)
    question = unique("background")
    queued = client.responses.create(model="llama3.2", input=question, background=True)
    assert queued.status == "queued"
    assert queued.background is True
    assert queued.output == []
    done = settled(client, queued.id)
    assert done.status == "completed"
    native = {"model": "llama3.2", "messages": [{"role": "user", "content": question}]}
    assert done.output_text == simulator_chat_text(simulator, native)


def test_a_slow_background_response_is_cancelled_upstream_too(
    start_service: Callable[..., Server], sdk: SDK
) -> None:
    slow = servers.simulator("--tokens", "200", "--token-delay", "0.05").start()
    try:
        client = sdk(start_service(OLLAMA_HOST=slow.url))
        queued = client.responses.create(model="llama3.2", input=unique("slow"),
                                         background=True)  # fmt: skip
        deadline = time.monotonic() + 5
        while simulator_counters(slow)["running"] == 0:
            assert time.monotonic() < deadline, "the background generation never started"
            time.sleep(0.02)
        assert client.responses.retrieve(queued.id).status == "in_progress"
        cancelled = client.responses.cancel(queued.id)
        assert cancelled.status == "cancelled"
        deadline = time.monotonic() + 1
        while simulator_counters(slow)["cancelled"] == 0:
            assert time.monotonic() < deadline, "Ollama still generating a second after"
            time.sleep(0.02)
        assert simulator_counters(slow)["completed"] == 0
        assert settled(client, queued.id).status == "cancelled"
        assert client.responses.cancel(queued.id).status == "cancelled"  # again: as it stands
    finally:
        slow.stop()


def test_deleted_and_unstored_responses_are_not_found(service: Server, sdk: SDK) -> None:
    client = sdk(service)
    stored = client.responses.create(model="llama3.2", input=unique("delete me"))
    assert client.responses.retrieve(stored.id).id == stored.id
    client.responses.delete(stored.id)
    for gone in (client.responses.retrieve, client.responses.delete):
        with pytest.raises(openai.NotFoundError):
            gone(stored.id)
    unstored = client.responses.create(model="llama3.2", input=unique("unstored"), store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="llama3.2", input="x", previous_response_id=unstored.id)
    assert "previous_response_id" in unknown.value.message


FUNCTION: ToolParam = {"type": "function", "name": "lookup", "description": "looks it up",
                       "strict": False, "parameters": {
                           "type": "object", "properties": {"q": {"type": "string"}}}}  # fmt: skip
CUSTOM: ToolParam = {"type": "custom", "name": "apply_patch", "description": "edits files",
                     "format": {"type": "grammar", "syntax": "lark",
                                "definition": "start: /(.|\\n)+/"}}  # fmt: skip


@pytest.mark.parametrize(
    ("tool", "arguments", "kind"),
    [pytest.param(FUNCTION, {"q": "x"}, "function_call", id="function"),
     pytest.param(CUSTOM, {"input": PATCH}, "custom_tool_call", id="custom")],
)  # fmt: skip
def test_a_tool_call_round_trips(
    service: Server, sdk: SDK, tool: ToolParam, arguments: dict[str, str], kind: str
) -> None:
    client = sdk(service)
    name = tool["name"]  # type: ignore[typeddict-item]  # both kinds here have one
    question = f"{unique('tool')} [sim: call {name} {json.dumps(arguments)}]"
    events = list(client.responses.create(model="llama3.2", input=question, tools=[tool],
                                          stream=True))  # fmt: skip
    field = "input" if kind == "custom_tool_call" else "arguments"
    streamed = "custom_tool_call_input" if kind == "custom_tool_call" else "function_call_arguments"
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        f"response.{streamed}.delta", f"response.{streamed}.done", "response.output_item.done",
        "response.completed"]  # fmt: skip
    completed = events[-1]
    assert completed.type == "response.completed"
    (call,) = completed.response.output
    assert call.type == kind
    assert call.type in ("function_call", "custom_tool_call")
    assert call.name == name
    given = getattr(call, field)
    assert (json.loads(given) if field == "arguments" else {"input": given}) == arguments
    output = {"type": f"{kind}_output", "call_id": call.call_id, "output": "sunny and warm"}
    follow_up: list[Any] = [{"role": "user", "content": question},
                            call.model_dump(exclude_none=True), output]  # fmt: skip
    answered = client.responses.create(model="llama3.2", input=follow_up, tools=[tool],
                                       store=False)  # fmt: skip
    assert answered.output_text == " The tool said: sunny and warm"


def test_errors_are_the_sdks_exceptions(service: Server, sdk: SDK) -> None:
    client = sdk(service)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="nonexistent", input="404")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.responses.create(model="llama3.2", input="x", max_tool_calls=3)
    assert (unsupported.value.param, unsupported.value.code) == ("max_tool_calls", "unsupported")
    with pytest.raises(openai.BadRequestError) as forced:
        client.responses.create(model="llama3.2", input="x", tools=[FUNCTION],
                                tool_choice="required")  # fmt: skip
    assert forced.value.param == "tool_choice"
