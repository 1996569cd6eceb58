"""The OpenAI-compatible engines' client against a scripted transport (respx): the request
mapped field by field, the stream read back as Ollama's tokens, tool call pieces assembled,
errors mapped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from app.errors import (
    InvalidRequest,
    ModelNotFound,
    Unsupported,
    UpstreamError,
    UpstreamUnavailable,
)
from app.generations.request import CompletionRequest
from app.upstream import openai
from app.upstream.engine import Finished, Token
from app.upstream.streaming import Timeouts

pytestmark = pytest.mark.anyio

BASE = "http://vllm.test"
CHAT = CompletionRequest(model="qwen3", messages=({"role": "user", "content": "Hi"},))
VLLM = openai.profile("vllm")


def sse(*chunks: dict[str, Any] | str) -> bytes:
    return b"".join(b"data: %s\n\n" % (c.encode() if isinstance(c, str) else orjson.dumps(c))
                    for c in chunks)  # fmt: skip


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def finish(reason: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def client() -> openai.OpenAIClient:
    return openai.client(BASE, "vllm", "", Timeouts(5.0, 5.0),
                         httpx.AsyncHTTPTransport())  # fmt: skip


async def run(request: CompletionRequest) -> list[Token | Finished]:
    emitted: list[Token | Finished] = []
    engine = client()
    try:
        await engine.generate(request, emitted.append)
    finally:
        await engine.aclose()
    return emitted


def test_a_prompt_is_a_chat_of_one_user_message_and_options_map_field_by_field() -> None:
    request = CompletionRequest(model="llama3.2:latest", prompt="Hi", system="Be brief.",
                                options={"temperature": 0, "num_predict": 5, "stop": ["\n"],
                                         "num_ctx": 4096, "repeat_penalty": 1.1},
                                format={"type": "object"}, think=False)  # fmt: skip
    body = openai.chat_body(request, VLLM)
    assert body["model"] == "llama3.2"
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hi"}]  # fmt: skip
    assert (body["temperature"], body["max_tokens"], body["stop"]) == (0, 5, ["\n"])
    assert body["repetition_penalty"] == 1.1
    assert "num_ctx" not in body  # how the model is loaded: ignored
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["stream_options"] == {"include_usage": True}


def test_an_option_no_engine_honours_is_refused_naming_it() -> None:
    request = CompletionRequest(model="m", prompt="Hi", options={"mirostat": 2})
    with pytest.raises(Unsupported) as refused:
        openai.chat_body(request, VLLM)
    assert refused.value.field == "options.mirostat"


def test_tool_results_answer_the_calls_they_follow() -> None:
    messages = ({"role": "user", "content": "ls?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "ls", "arguments": {"path": "."}}}]},
                {"role": "tool", "content": "a b", "tool_name": "ls"})  # fmt: skip
    body = openai.chat_body(CompletionRequest(model="m", messages=messages), VLLM)
    call = body["messages"][1]["tool_calls"][0]
    assert call["function"] == {"name": "ls", "arguments": '{"path":"."}'}
    assert body["messages"][2]["tool_call_id"] == call["id"]


async def test_the_stream_becomes_tokens_then_the_usage_counts(router: respx.MockRouter) -> None:
    stream = sse(delta(role="assistant", content=""), delta(reasoning_content="hm"),
                 delta(content="Hel"), delta(content="lo"), finish("length"), USAGE,
                 "[DONE]")  # fmt: skip
    router.post("/v1/chat/completions").respond(200, content=stream)
    *tokens, done = await run(CHAT)
    assert [t.fields for t in tokens if isinstance(t, Token)] == [
        {"thinking": "hm"}, {"text": "Hel"}, {"text": "lo"}]  # fmt: skip
    assert isinstance(done, Finished)
    assert done.stats["done_reason"] == "length"
    assert (done.stats["prompt_eval_count"], done.stats["eval_count"]) == (7, 2)


async def test_tool_call_pieces_are_one_whole_call(router: respx.MockRouter) -> None:
    stream = sse(delta(tool_calls=[{"index": 0, "id": "c", "type": "function",
                                    "function": {"name": "ls", "arguments": ""}}]),
                 delta(tool_calls=[{"index": 0, "function": {"arguments": '{"pa'}}]),
                 delta(tool_calls=[{"index": 0, "function": {"arguments": 'th": "."}'}}]),
                 finish("tool_calls"), USAGE, "[DONE]")  # fmt: skip
    router.post("/v1/chat/completions").respond(200, content=stream)
    emitted = await run(CHAT)
    call = {"function": {"name": "ls", "arguments": {"path": "."}}}
    assert emitted[0] == Token({"tool_calls": [call]})
    assert isinstance(emitted[1], Finished)
    assert emitted[1].stats["done_reason"] == "stop"


@pytest.mark.parametrize(("status", "body", "error"), [
    (404, {"object": "error", "message": "The model `x` does not exist.", "code": 404},
     ModelNotFound),
    (400, {"error": {"message": "bad", "type": "invalid_request_error"}}, InvalidRequest),
    (503, {"error": {"message": "loading model"}}, UpstreamUnavailable),
])  # fmt: skip
async def test_errors_map_onto_ours(
    router: respx.MockRouter, status: int, body: dict[str, Any], error: type[Exception]
) -> None:
    router.post("/v1/chat/completions").respond(status, json=body)
    with pytest.raises(error) as raised:
        await run(CHAT)
    message = body.get("message") or body["error"]["message"]
    assert "vLLM" in str(raised.value)
    assert message in str(raised.value)


async def test_a_stream_that_stops_short_is_an_error(router: respx.MockRouter) -> None:
    router.post("/v1/chat/completions").respond(200, content=sse(delta(content="Hel"), "[DONE]"))
    with pytest.raises(UpstreamError, match="before it was done"):
        await run(CHAT)


async def test_models_are_listed_as_ollama_lists_them(router: respx.MockRouter) -> None:
    model = {"id": "gemma-3-270m", "object": "model", "created": 0, "owned_by": "llamacpp"}
    router.get("/v1/models").respond(200, json={"object": "list", "data": [model]})
    engine = client()
    try:
        (model,) = await engine.models()
        assert (model["name"], model["model"]) == ("gemma-3-270m", "gemma-3-270m")
        assert (await engine.show({"model": "gemma-3-270m:latest"}))["details"]
    finally:
        await engine.aclose()


async def test_tokens_are_counted_the_way_each_engine_can(router: respx.MockRouter) -> None:
    router.post("/tokenize", json__content="<user>Hi").respond(200, json={"tokens": [1, 2, 3]})
    router.post("/tokenize").respond(200, json={"count": 5, "max_model_len": 4096})
    router.post("/apply-template").respond(200, json={"prompt": "<user>Hi"})
    counts = []
    for engine in ("vllm", "llamacpp", "sglang"):
        made = openai.client(BASE, engine, "", Timeouts(5.0, 5.0),
                             httpx.AsyncHTTPTransport())  # fmt: skip
        try:
            counts.append(await made.count_tokens(CHAT))
        finally:
            await made.aclose()
    assert counts == [5, 3, None]  # SGLang: no tokenizer endpoint known here


async def test_the_queue_an_engine_reports_is_read_from_its_metrics(
    router: respx.MockRouter,
) -> None:
    router.get("/metrics").respond(200, text=(
        '# TYPE vllm:num_requests_waiting gauge\n'
        'vllm:num_requests_waiting{model_name="a"} 2.0\n'
        'vllm:num_requests_waiting{model_name="b"} 1.0\n'
        'vllm:num_requests_running{model_name="a"} 7.0\n'))  # fmt: skip
    engine = client()
    try:
        assert await engine.waiting() == 3
        router.get("/metrics").respond(404)  # llama.cpp without --metrics, say
        assert await engine.waiting() is None
    finally:
        await engine.aclose()


async def test_lm_studio_lists_its_models_and_says_which_are_loaded(
    router: respx.MockRouter,
) -> None:
    router.get("/api/v0/models").respond(200, json={"object": "list", "data": [
        {"id": "qwen3-8b", "object": "model", "type": "llm", "state": "loaded"},
        {"id": "nomic-embed", "object": "model", "type": "embeddings", "state": "not-loaded"},
    ]})  # fmt: skip
    engine = openai.client(BASE, "lmstudio", "", Timeouts(5.0, 5.0),
                           httpx.AsyncHTTPTransport())  # fmt: skip
    try:
        assert [m["name"] for m in await engine.models()] == ["qwen3-8b", "nomic-embed"]
        assert [m["name"] for m in await engine.running()] == ["qwen3-8b"]
    finally:
        await engine.aclose()


async def test_a_raw_prompt_is_a_text_completion(router: respx.MockRouter) -> None:
    request = CompletionRequest(model="m", prompt="Once upon", system="ignored", raw=True,
                                options={"temperature": 0})  # fmt: skip
    body = openai.chat_body(request, VLLM)
    assert (body["prompt"], "messages" in body, body["temperature"]) == ("Once upon", False, 0)
    text = {"choices": [{"index": 0, "text": " a time", "finish_reason": None}]}
    route = router.post("/v1/completions").respond(200, content=sse(text, finish("stop"), USAGE,
                                                                   "[DONE]"))  # fmt: skip
    emitted = await run(request)
    assert route.called
    assert emitted[0] == Token({"text": " a time"})
