"""The simulator's vLLM mode speaks vLLM's OpenAI-compatible API, with the Ollama mode's text.

Both modes run in-process behind an ``httpx.ASGITransport`` (the openai SDK's behind its own
``httpx2``'s); a hang-up is played on the raw ASGI app, as the transport reads a response whole.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import anyio
import httpx
import httpx2
import openai
import pytest
from starlette.applications import Starlette

from simulator.app import EMBEDDING_LENGTH, Behaviour, create_app

pytestmark = pytest.mark.anyio

HELLO = [{"role": "user", "content": "hello"}]
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


@pytest.fixture
async def vllm() -> AsyncIterator[httpx.AsyncClient]:
    async with client(create_app(Behaviour(engine="vllm", token_delay=0))) as http:
        yield http


@pytest.fixture
async def ollama() -> AsyncIterator[httpx.AsyncClient]:
    async with client(create_app(Behaviour(token_delay=0))) as http:
        yield http


async def chunks(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    """A streamed answer's ``data:`` chunks, checked to end with ``[DONE]``."""
    response = await http.post(path, json={**body, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    *events, done, rest = response.text.split("\n\n")
    assert (done, rest) == ("data: [DONE]", "")
    assert all(event.startswith("data: ") for event in events)
    return [json.loads(event.removeprefix("data: ")) for event in events]


def deltas(events: list[Any], field: str) -> str:
    return "".join(e["choices"][0]["delta"].get(field) or "" for e in events if e["choices"])


async def ollama_lines(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    response = await http.post(path, json=body)
    assert response.status_code == 200
    return [json.loads(line) for line in response.content.splitlines()]


def ollama_text(lines: list[Any], field: str = "content") -> str:
    return "".join(line["message"].get(field) or "" for line in lines)


@pytest.mark.parametrize(
    ("extra", "options"),
    [
        pytest.param({}, {}, id="plain"),
        pytest.param({"sim_tokens": 5}, {"sim_tokens": 5}, id="sim-knob"),
        pytest.param({"temperature": 0.2, "repetition_penalty": 1.1, "user": "u", "n": 1},
                     {"temperature": 0.2, "repeat_penalty": 1.1}, id="sampling"),
    ],
)  # fmt: skip
async def test_streamed_chat_has_the_ollama_modes_text(
    vllm: httpx.AsyncClient,
    ollama: httpx.AsyncClient,
    extra: dict[str, Any],
    options: dict[str, Any],
) -> None:
    events = await chunks(vllm, "/v1/chat/completions", {"model": "llama3.2", "messages": HELLO,
                                                         **extra})  # fmt: skip
    asked = {"model": "llama3.2", "messages": HELLO, **({"options": options} if options else {})}
    expected = ollama_text(await ollama_lines(ollama, "/api/chat", asked))
    assert deltas(events, "content") == expected
    first, *tokens, last = events
    assert first["object"] == "chat.completion.chunk"
    assert first["id"].startswith("chatcmpl-")
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "logprobs": None, "finish_reason": None}]  # fmt: skip
    assert len(tokens) == extra.get("sim_tokens", 20)
    assert last["choices"][0]["delta"] == {}
    assert last["choices"][0]["finish_reason"] == "stop"
    assert {e["id"] for e in events} == {first["id"]}
    assert {e["model"] for e in events} == {"llama3.2"}


async def test_usage_comes_last_when_asked(vllm: httpx.AsyncClient) -> None:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "three words here"}],
            "sim_tokens": 4, "stream_options": {"include_usage": True}}  # fmt: skip
    *_, last, usage = await chunks(vllm, "/v1/chat/completions", body)
    assert last["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    without = await chunks(vllm, "/v1/chat/completions", {**body, "stream_options": None})
    assert "usage" not in without[-1]


async def test_max_tokens_cuts_with_length(vllm: httpx.AsyncClient) -> None:
    body = {"model": "llama3.2", "messages": HELLO, "max_tokens": 3}
    events = await chunks(vllm, "/v1/chat/completions", body)
    assert len(events) == 1 + 3 + 1
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    refused = await vllm.post("/v1/chat/completions", json={**body, "max_tokens": 0})
    assert refused.status_code == 400


@pytest.mark.parametrize(
    ("content", "called"),
    [
        pytest.param("hello", {"name": "weather", "arguments": {"q": "x"}}, id="first-tool"),
        pytest.param('[sim: call weather {"city": "Paris", "days": 3}]',
                     {"name": "weather", "arguments": {"city": "Paris", "days": 3}},
                     id="directive"),
    ],
)  # fmt: skip
async def test_a_tool_call_streams_as_name_then_argument_pieces(
    vllm: httpx.AsyncClient, ollama: httpx.AsyncClient, content: str, called: dict[str, Any]
) -> None:
    messages = [{"role": "user", "content": content}]
    body = {"model": "llama3.2", "messages": messages, "tools": TOOLS}
    *events, last = await chunks(vllm, "/v1/chat/completions", body)
    calls = [call for e in events for call in e["choices"][0]["delta"].get("tool_calls") or ()]
    head, *pieces = calls
    assert head["index"] == 0
    assert head["id"].startswith("call_")
    assert head["type"] == "function"
    assert head["function"] == {"name": "weather", "arguments": ""}
    assert len(pieces) >= 2
    assert all(piece.keys() == {"index", "function"} for piece in pieces)
    arguments = "".join(piece["function"]["arguments"] for piece in pieces)
    assert {"name": "weather", "arguments": json.loads(arguments)} == called
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    lines = await ollama_lines(ollama, "/api/chat", body)
    assert lines[0]["message"]["tool_calls"] == [{"function": called}]
    unused = await chunks(vllm, "/v1/chat/completions", {**body, "tool_choice": "none"})
    assert not any("tool_calls" in e["choices"][0]["delta"] for e in unused)


async def test_a_thinking_model_thinks_into_reasoning_content(
    vllm: httpx.AsyncClient, ollama: httpx.AsyncClient
) -> None:
    events = await chunks(vllm, "/v1/chat/completions", {"model": "qwen3", "messages": HELLO})
    lines = await ollama_lines(ollama, "/api/chat", {"model": "qwen3", "messages": HELLO,
                                                     "think": True})  # fmt: skip
    assert deltas(events, "reasoning_content") == ollama_text(lines, "thinking") == " Let me think."
    assert deltas(events, "content") == ollama_text(lines)
    off = {"model": "qwen3", "messages": HELLO, "chat_template_kwargs": {"enable_thinking": False}}
    assert deltas(await chunks(vllm, "/v1/chat/completions", off), "reasoning_content") == ""
    plain = await chunks(vllm, "/v1/chat/completions", {"model": "llama3.2", "messages": HELLO})
    assert deltas(plain, "reasoning_content") == ""


async def test_a_chat_not_streamed_is_one_completion(
    vllm: httpx.AsyncClient, ollama: httpx.AsyncClient
) -> None:
    body = {"model": "qwen3", "messages": HELLO, "sim_tokens": 6}
    answer = (await vllm.post("/v1/chat/completions", json=body)).json()
    assert answer["object"] == "chat.completion"
    [choice] = answer["choices"]
    asked = {"model": "qwen3", "messages": HELLO, "think": True, "options": {"sim_tokens": 6}}
    lines = await ollama_lines(ollama, "/api/chat", asked)
    assert choice["message"] == {"role": "assistant", "content": ollama_text(lines),
                                 "reasoning_content": " Let me think.",
                                 "tool_calls": []}  # fmt: skip
    assert choice["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 1, "completion_tokens": 10, "total_tokens": 11}
    called = (await vllm.post("/v1/chat/completions", json={**body, "model": "llama3.2",
                                                            "tools": TOOLS})).json()  # fmt: skip
    [call] = called["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "weather", "arguments": '{"q": "x"}'}
    assert called["choices"][0]["finish_reason"] == "tool_calls"


async def test_completions_have_the_generate_text(
    vllm: httpx.AsyncClient, ollama: httpx.AsyncClient
) -> None:
    body = {"model": "llama3.2", "prompt": "once upon a time"}
    lines = await ollama_lines(ollama, "/api/generate", body)
    expected = "".join(line["response"] for line in lines)
    events = await chunks(vllm, "/v1/completions", body)
    assert all(e["object"] == "text_completion" for e in events)
    assert "".join(e["choices"][0]["text"] for e in events) == expected
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    whole = (await vllm.post("/v1/completions", json=body)).json()
    assert whole["id"].startswith("cmpl-")
    assert whole["choices"][0]["text"] == expected
    assert whole["usage"]["prompt_tokens"] == 4


@pytest.mark.parametrize(
    ("path", "body", "status", "kind"),
    [
        pytest.param("/v1/chat/completions", {"model": "gpt-9", "messages": HELLO}, 404,
                     "NotFoundError", id="unknown-model"),
        pytest.param("/v1/completions", {"model": "gpt-9", "prompt": "a"}, 404,
                     "NotFoundError", id="unknown-model-completion"),
        pytest.param("/v1/chat/completions", {"model": "llama3.2"}, 400, "BadRequestError",
                     id="no-messages"),
        pytest.param("/v1/chat/completions", [1], 400, "BadRequestError", id="not-an-object"),
        pytest.param("/v1/chat/completions",
                     {"model": "llama3.2", "messages": HELLO, "sim_fault": "500"}, 500,
                     "InternalServerError", id="fault-500"),
        pytest.param("/v1/chat/completions",
                     {"model": "llama3.2", "messages": HELLO, "sim_fault": "busy"}, 503,
                     "ServiceUnavailableError", id="fault-busy"),
    ],
)  # fmt: skip
async def test_errors_have_vllms_body(
    vllm: httpx.AsyncClient, path: str, body: Any, status: int, kind: str
) -> None:
    response = await vllm.post(path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error.keys() == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (kind, None, status)
    if status == 404:
        assert error["message"] == "The model `gpt-9` does not exist."


async def test_invalid_json_is_a_bad_request(vllm: httpx.AsyncClient) -> None:
    response = await vllm.post("/v1/chat/completions", content=b"{")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"


async def test_an_error_mid_stream_is_an_error_chunk(vllm: httpx.AsyncClient) -> None:
    body = {"model": "llama3.2", "messages": HELLO, "sim_fault": "error", "sim_fault_after": 2}
    role, *tokens, error = await chunks(vllm, "/v1/chat/completions", body)
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert ["content" in token["choices"][0]["delta"] for token in tokens] == [True, True]
    assert error["error"]["code"] == 500
    counters = (await vllm.get("/_sim/counters")).json()
    assert (counters["started"], counters["failed"], counters["completed"]) == (1, 1, 0)


async def test_models_health_version_and_metrics(vllm: httpx.AsyncClient) -> None:
    models = (await vllm.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["llama3.2", "qwen3"]
    model = models["data"][0]
    assert (model["object"], model["owned_by"], model["root"]) == ("model", "vllm", "llama3.2")
    assert model["max_model_len"] == 4096
    assert isinstance(model["created"], int)
    health = await vllm.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    assert (await vllm.get("/version")).json() == {"version": "0.11.0"}
    metrics = (await vllm.get("/metrics")).text
    assert 'vllm:num_requests_running{model_name="qwen3"} 0.0\n' in metrics
    assert 'vllm:num_requests_waiting{model_name="llama3.2"} 0.0\n' in metrics


async def test_tokenize_counts_words(vllm: httpx.AsyncClient) -> None:
    prompt = (await vllm.post("/tokenize", json={"model": "qwen3", "prompt": "a b  c\nd"})).json()
    assert prompt["count"] == len(prompt["tokens"]) == 4
    assert prompt["max_model_len"] == 4096
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a b"}]}]  # fmt: skip
    chat = (await vllm.post("/tokenize", json={"model": "qwen3", "messages": messages})).json()
    assert chat["count"] == 4
    assert chat["tokens"][2:] == prompt["tokens"][:2]  # the same word, the same token
    unknown = await vllm.post("/tokenize", json={"model": "gpt-9", "prompt": "a"})
    assert unknown.status_code == 404


async def test_embeddings_are_the_ollama_modes(
    vllm: httpx.AsyncClient, ollama: httpx.AsyncClient
) -> None:
    texts = ["a cat", "a dog sat"]
    answer = (await vllm.post("/v1/embeddings", json={"model": "llama3.2", "input": texts})).json()
    expected = (await ollama.post("/api/embed", json={"model": "llama3.2", "input": texts})).json()
    assert [item["embedding"] for item in answer["data"]] == expected["embeddings"]
    assert [item["index"] for item in answer["data"]] == [0, 1]
    assert len(answer["data"][0]["embedding"]) == EMBEDDING_LENGTH
    assert answer["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert answer["model"] == "llama3.2"


@pytest.mark.parametrize(
    "path", ["/api/chat", "/api/generate", "/api/tags", "/api/version", "/api/embed", "/"]
)
async def test_the_ollama_routes_are_not_served(vllm: httpx.AsyncClient, path: str) -> None:
    body = {"model": "llama3.2", "prompt": "a", "messages": HELLO, "input": "a"}
    assert (await vllm.post(path, json=body)).status_code == 404
    assert (await vllm.get(path)).status_code == 404


async def test_a_hang_up_is_counted_cancelled_and_stops_the_generation() -> None:
    app = create_app(Behaviour(engine="vllm", tokens=50, token_delay=0.01))
    body = json.dumps({"model": "llama3.2", "messages": HELLO, "stream": True}).encode()
    asked, hung_up = [False], anyio.Event()
    sent: list[MutableMapping[str, Any]] = []
    running: list[str] = []

    async def receive() -> dict[str, Any]:
        if not asked[0]:
            asked[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async with client(app) as http:

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)
            if len(sent) == 3:  # the status line and two tokens
                running.append((await http.get("/metrics")).text)
                hung_up.set()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
                 "raw_path": b"/v1/chat/completions", "root_path": "", "query_string": b"",
                 "headers": [(b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 50000), "server": ("sim", 80)}  # fmt: skip
        await app(scope, receive, send)
        counters = (await http.get("/_sim/counters")).json()
    assert 'vllm:num_requests_running{model_name="llama3.2"} 1.0' in running[0]
    assert len(sent) < 10
    assert (counters["started"], counters["cancelled"], counters["completed"]) == (1, 1, 0)
    assert counters["running"] == 0


async def test_the_openai_sdk_reads_the_stream(ollama: httpx.AsyncClient) -> None:
    app = create_app(Behaviour(engine="vllm", token_delay=0))
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))  # the SDK's own httpx
    async with openai.AsyncOpenAI(base_url="http://sim/v1", api_key="x", http_client=http) as sdk:
        stream = await sdk.chat.completions.create(
            model="qwen3",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        text, reasons, usage = "", [], None
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                reasons.append(choice.finish_reason)
            usage = chunk.usage or usage
        tool_stream = await sdk.chat.completions.create(
            model="llama3.2",
            messages=[{"role": "user", "content": '[sim: call weather {"city": "Oslo"}]'}],
            tools=[{"type": "function", "function": {"name": "weather", "parameters": {}}}],
            stream=True,
        )
        arguments = ""
        async for chunk in tool_stream:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or ():
                    assert call.function is not None
                    arguments += call.function.arguments or ""
        vectors = await sdk.embeddings.create(model="llama3.2", input=["a cat"])
    lines = await ollama_lines(ollama, "/api/chat", {"model": "qwen3", "messages": HELLO,
                                                     "think": False})  # fmt: skip
    assert text == ollama_text(lines)
    assert reasons[-1] == "stop"
    assert usage is not None
    assert usage.completion_tokens == 20
    assert json.loads(arguments) == {"city": "Oslo"}
    expected = await ollama.post("/api/embed", json={"model": "llama3.2", "input": "a cat"})
    assert vectors.data[0].embedding == pytest.approx(expected.json()["embeddings"][0], abs=1e-6)
