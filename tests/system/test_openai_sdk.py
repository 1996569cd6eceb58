"""The real ``openai`` SDK (from PyPI) against the real app over sockets: what its users do.

The SDK (3.x) speaks HTTP through ``httpx2``, its own fork of httpx; a test that needs the raw
bytes wraps the SDK's transport, so the SDK still does all the parsing.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
    ChatCompletionUserMessageParam,
)

from harness.servers import Server, simulator_counters
from tests.support import sse
from tests.support.bodies import unique
from tests.support.sdks import SDK, Recording

pytestmark = pytest.mark.system


def ask(label: str) -> list[ChatCompletionUserMessageParam]:
    return [{"role": "user", "content": unique(label)}]


def test_chat_stream_with_usage_parses_and_matches_the_json_answer(
    service: Server, sdk: SDK
) -> None:
    client = sdk(service)
    messages = ask("openai stream")
    chunks = list(client.chat.completions.create(
        model="llama3.2", messages=messages, stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    *tokens, last, usage = chunks
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == 12
    assert usage.usage.total_tokens > 12
    assert last.choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in tokens)
    assert len(tokens) == 12
    assert text
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[0].id.startswith("chatcmpl-g_")
    again = client.chat.completions.with_raw_response.create(model="llama3.2", messages=messages)
    answer = again.parse()
    assert again.headers["x-cache"] == "HIT"  # the stream's completion, from the cache
    assert answer.choices[0].message.content == text
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 12
    assert answer.id == chunks[0].id  # the same generation


def test_one_cache_entry_for_the_native_and_openai_surfaces(service: Server, sdk: SDK) -> None:
    messages = ask("shared")
    native = httpx.post(service.url + "/v1/chats/generate",
                        json={"messages": messages, "stream": False}, timeout=20)  # fmt: skip
    assert native.headers["x-cache"] == "MISS"
    raw = sdk(service).chat.completions.with_raw_response.create(model="llama3.2",
                                                                 messages=messages)  # fmt: skip
    assert raw.headers["x-cache"] == "HIT"
    assert raw.headers["x-generation-id"] == native.headers["x-generation-id"]
    assert raw.parse().choices[0].message.content == native.json()["response"]


def test_text_completions_stream_and_not(service: Server, sdk: SDK) -> None:
    client = sdk(service)
    prompt = unique("openai text")
    streamed = list(client.completions.create(model="llama3.2", prompt=prompt, stream=True,
                                              max_tokens=5))  # fmt: skip
    assert streamed[-1].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].text for c in streamed)
    whole = client.completions.create(model="llama3.2", prompt=prompt, max_tokens=5)
    assert whole.choices[0].text == text
    assert whole.object == "text_completion"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 5


def test_models_list(service: Server, sdk: SDK) -> None:
    models = sdk(service).models.list()
    ids = [m.id for m in models.data]
    assert "llama3.2:latest" in ids
    assert all(m.object == "model" for m in models.data)
    native = httpx.get(service.url + "/v1/models").json()
    assert [m["name"] for m in native["models"]] == ids  # what native clients read is kept


def test_errors_are_the_sdks_exceptions(service: Server, sdk: SDK) -> None:
    client = sdk(service)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nonexistent", messages=ask("404"))
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.chat.completions.create(model="llama3.2", messages=ask("n"), n=2)
    assert unsupported.value.param == "n"
    assert unsupported.value.code == "unsupported"
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="llama3.2", messages=ask("t"),
                                       extra_body={"temperature": "hot"})  # fmt: skip


def test_rate_limited_is_a_rate_limit_error(start_service: Callable[..., Server], sdk: SDK) -> None:
    client = sdk(start_service(RATE_LIMIT_MAX="1"))
    client.chat.completions.create(model="llama3.2", messages=ask("first"))
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="llama3.2", messages=ask("second"))
    assert refused.value.code == "rate_limited"
    assert int(refused.value.response.headers["retry-after"]) > 0


def test_an_error_mid_stream_is_an_api_error(service: Server, sdk: SDK) -> None:
    stream = sdk(service).chat.completions.create(
        model="llama3.2", messages=ask("mid-stream"), stream=True,
        extra_body={"options": {"sim_fault": "error", "sim_fault_after": 3}},
    )  # fmt: skip
    received: list[object] = []
    with pytest.raises(openai.APIError) as failed:
        received.extend(stream)  # what came before the error stays
    assert len(received) == 3
    assert "upstream" in str(failed.value.body)


def test_heartbeats_through_a_slow_first_token_do_not_trouble_the_sdk(
    service: Server, sdk: SDK
) -> None:
    recording = Recording()
    stream = sdk(service, recording).chat.completions.create(
        model="llama3.2", messages=ask("slow"), stream=True,
        extra_body={"options": {"sim_first_token_delay": 2.5, "sim_tokens": 3}},
    )  # fmt: skip
    chunks = list(stream)
    assert len(chunks) == 4
    assert chunks[-1].choices[0].finish_reason == "stop"
    seen = bytes(recording.seen)
    assert seen.startswith(b": ping\n")
    assert seen.count(b": ping\n") >= 2
    assert sse.blocks_without_data(seen) == []
    assert seen.endswith(b"data: [DONE]\n\n")


def test_embeddings_cached_and_shared_with_ollamas_embed(
    service: Server, simulator: Server, sdk: SDK
) -> None:
    client = sdk(service)
    text = unique("embed")
    before = simulator_counters(simulator)["embedded"]
    packed = client.embeddings.with_raw_response.create(model="llama3.2", input=[text, "two"])
    assert packed.headers["x-cache"] == "MISS"
    vectors = [d.embedding for d in packed.parse().data]  # base64, as the SDK asks by default
    floats = client.embeddings.create(model="llama3.2", input=[text, "two"],
                                      encoding_format="float")  # fmt: skip
    for packed_vector, float_vector in zip(vectors, (d.embedding for d in floats.data),
                                           strict=True):  # fmt: skip
        assert packed_vector == pytest.approx(float_vector, rel=1e-6)  # float32 on the wire
    native = httpx.post(service.url + "/api/embed",
                        json={"model": "llama3.2", "input": [text, "two"]})  # fmt: skip
    assert native.headers["x-cache"] == "HIT"
    assert native.json()["embeddings"] == [d.embedding for d in floats.data]
    assert simulator_counters(simulator)["embedded"] == before + 1  # one upstream request in all
    shorter = client.embeddings.with_raw_response.create(model="llama3.2", input=[text, "two"],
                                                         dimensions=4)  # fmt: skip
    assert shorter.headers["x-cache"] == "MISS"
    assert len(shorter.parse().data[0].embedding) == 4
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="llama3.2", input=[[1, 2, 3]])


def test_tool_calls_round_trip(service: Server, sdk: SDK) -> None:
    client = sdk(service)
    tools: list[ChatCompletionToolParam] = [{"type": "function", "function": {
        "name": "weather", "parameters": {"type": "object",
                                          "properties": {"q": {"type": "string"}}}}}]  # fmt: skip
    messages: list[ChatCompletionMessageParam] = [*ask("tools")]
    chunks = list(client.chat.completions.create(model="llama3.2", messages=messages,
                                                 tools=tools, stream=True))  # fmt: skip
    streamed = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
    assert [call.function.name for call in streamed if call.function] == ["weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    whole = client.chat.completions.create(model="llama3.2", messages=messages, tools=tools)
    (call,) = whole.choices[0].message.tool_calls or []
    assert call.id == streamed[0].id
    assert call.type == "function"
    assert json.loads(call.function.arguments) == {"q": "x"}
    assert whole.choices[0].finish_reason == "tool_calls"
    answered = client.chat.completions.create(model="llama3.2", messages=[
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": call.id, "type": "function",
            "function": {"name": "weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ])  # fmt: skip
    assert answered.choices[0].message.content


def test_reasoning_as_ollamas_openai_layer_sends_it(service: Server, sdk: SDK) -> None:
    client = sdk(service)
    messages = ask("think")
    chunks = list(client.chat.completions.create(model="qwen3", messages=messages, stream=True,
                                                 reasoning_effort="high"))  # fmt: skip
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning", "")
                        for c in chunks if c.choices)  # fmt: skip
    assert reasoning == " Let me think."
    whole = client.chat.completions.create(model="qwen3", messages=messages,
                                           reasoning_effort="high")  # fmt: skip
    assert (whole.choices[0].message.model_extra or {})["reasoning"] == reasoning
    with pytest.raises(openai.UnprocessableEntityError):  # llama3.2 does not think (422)
        client.chat.completions.create(model="llama3.2", messages=messages,
                                       reasoning_effort="low")  # fmt: skip
