"""The Ollama client against a scripted transport (respx): parsing, errors, timeouts, closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from app.errors import (
    InvalidRequest,
    ModelNotFound,
    ServiceError,
    UpstreamError,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.generations.request import CompletionRequest
from app.upstream.engine import Finished, Token
from app.upstream.ollama import OllamaClient

pytestmark = pytest.mark.anyio

BASE = "http://ollama.test"
PROMPT = CompletionRequest(model="llama3.2", prompt="Hi")
CHAT = CompletionRequest(model="qwen3", messages=({"role": "user", "content": "Hi"},))
FINAL = {
    "model": "llama3.2",
    "created_at": "t",
    "response": "",
    "done": True,
    "done_reason": "stop",
    "context": [1, 2],
    "eval_count": 2,
    "total_duration": 5,
}


def ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def chunks(*parts: bytes, delay_seconds: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(delay_seconds)
        yield part


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def client(first_token: float = 5.0, idle: float = 5.0) -> OllamaClient:
    return OllamaClient.connect(
        BASE,
        first_token_timeout_seconds=first_token,
        idle_timeout_seconds=idle,
        transport=httpx.AsyncHTTPTransport(),  # respx patches it
    )


async def run(ollama: OllamaClient, request: CompletionRequest = PROMPT) -> list[Token | Finished]:
    emitted: list[Token | Finished] = []
    await ollama.generate(request, emitted.append)
    return emitted


async def test_lines_split_anywhere_become_tokens_then_stats(router: respx.MockRouter) -> None:
    """NDJSON lines cut at arbitrary chunk borders are reassembled; stats drop text fields."""
    body = ndjson({"response": "Hel", "done": False}, {"response": "lo\n", "done": False}, FINAL)
    parts = [body[i : i + 7] for i in range(0, len(body), 7)]
    route = router.post("/api/generate").mock(httpx.Response(200, content=chunks(*parts)))
    emitted = await run(client())
    assert emitted == [
        Token({"text": "Hel"}),
        Token({"text": "lo\n"}),
        Finished({"model": "llama3.2", "created_at": "t", "done_reason": "stop",
                  "eval_count": 2, "total_duration": 5}),
    ]  # fmt: skip
    sent = orjson.loads(route.calls[0].request.content)
    assert sent == {"model": "llama3.2", "prompt": "Hi", "stream": True}


async def test_chat_thinking_and_tool_calls(router: respx.MockRouter) -> None:
    calls = [{"function": {"name": "f", "arguments": {}}}]
    body = ndjson(
        {"message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False},
        {"message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False},
        {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"},
    )
    router.post("/api/chat").mock(httpx.Response(200, content=body))
    emitted = await run(client(), CHAT)
    assert emitted == [
        Token({"thinking": "hm"}),
        Token({"tool_calls": calls}),
        Finished({"done_reason": "stop"}),
    ]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        pytest.param(404, b'{"error":"model \\"x\\" not found"}', ModelNotFound, id="404"),
        pytest.param(400, b'{"error":"bad option"}', InvalidRequest, id="400"),
        pytest.param(503, b'{"error":"server busy"}', UpstreamUnavailable, id="503"),
        pytest.param(429, b"slow down", UpstreamUnavailable, id="429"),
        pytest.param(500, b'{"error":"boom"}', UpstreamFailed, id="500"),
        pytest.param(502, b"<html>bad gateway</html>", UpstreamFailed, id="502-html"),
        pytest.param(418, b"teapot", UpstreamError, id="418"),
    ],
)
async def test_statuses_map_to_our_errors(
    router: respx.MockRouter, status: int, body: bytes, error: type[ServiceError]
) -> None:
    router.post("/api/generate").mock(httpx.Response(status, content=body))
    with pytest.raises(error) as caught:
        await run(client())
    assert type(caught.value) is error
    if body.startswith(b"{"):
        assert orjson.loads(body)["error"] in caught.value.detail


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(ndjson({"response": "a", "done": False}, {"error": "oom"}), "oom", id="error"),
        pytest.param(b'{"response": "a", "done": false}\n<html>', "not JSON", id="garbage"),
        pytest.param(b"[1]\n", "not a JSON object", id="not-object"),
        pytest.param(ndjson({"response": "a", "done": False}), "before it was done", id="no-done"),
    ],
)
async def test_bad_streams_are_upstream_errors(
    router: respx.MockRouter, body: bytes, detail: str
) -> None:
    router.post("/api/generate").mock(httpx.Response(200, content=body))
    with pytest.raises(UpstreamError, match=detail):
        await run(client())


async def test_unreachable_is_unavailable(router: respx.MockRouter) -> None:
    router.post("/api/generate").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable):
        await run(client())


async def test_connection_lost_mid_stream_is_upstream_error(router: respx.MockRouter) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield ndjson({"response": "a", "done": False})
        raise httpx.ReadError("connection reset")

    router.post("/api/generate").mock(httpx.Response(200, content=broken()))
    with pytest.raises(UpstreamError, match="dropped"):
        await run(client())


async def test_no_first_token_in_time(router: respx.MockRouter) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1)
        return httpx.Response(200, content=ndjson(FINAL))

    router.post("/api/generate").mock(side_effect=slow)
    with pytest.raises(UpstreamTimeout, match=r"first token within 0\.1 seconds"):
        await run(client(first_token=0.1))


async def test_silence_between_tokens(router: respx.MockRouter) -> None:
    """A slow first token is fine; a gap after it longer than the idle timeout is not."""
    body = chunks(ndjson({"response": "a", "done": False}), ndjson(FINAL), delay_seconds=0.3)
    router.post("/api/generate").mock(httpx.Response(200, content=body))
    with pytest.raises(UpstreamTimeout, match=r"nothing for 0\.2 seconds"):
        await run(client(first_token=1, idle=0.2))


async def test_cancelling_closes_the_upstream_response(router: respx.MockRouter) -> None:
    """A cancelled generation leaves no open upstream stream behind."""
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield ndjson({"response": "a", "done": False})
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    router.post("/api/generate").mock(httpx.Response(200, content=endless()))
    three_tokens = asyncio.Event()
    emitted: list[Token | Finished] = []

    def emit(chunk: Token | Finished) -> None:
        emitted.append(chunk)
        if len(emitted) == 3:
            three_tokens.set()

    task = asyncio.create_task(client().generate(PROMPT, emit))
    await three_tokens.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(closed.wait(), 1)


async def test_models_and_version(router: respx.MockRouter) -> None:
    router.get("/api/tags").mock(httpx.Response(200, json={"models": [{"name": "llama3.2"}]}))
    router.get("/api/version").mock(httpx.Response(200, json={"version": "0.12.6"}))
    ollama = client()
    assert await ollama.models() == [{"name": "llama3.2"}]
    assert await ollama.version() == "0.12.6"


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(200, content=b"nope"), id="not-json"),
        pytest.param(httpx.Response(200, json=[]), id="not-object"),
        pytest.param(httpx.Response(200, json={"models": None}), id="no-models"),
        pytest.param(httpx.Response(500, json={"error": "x"}), id="500"),
    ],
)
async def test_bad_model_lists_are_upstream_errors(
    router: respx.MockRouter, response: httpx.Response
) -> None:
    router.get("/api/tags").mock(response)
    with pytest.raises(UpstreamError):
        await client().models()


@pytest.mark.parametrize("base", ["http://h:11434", "http://h:11434/", "http://h:1/ollama/"])
def test_the_parsed_once_urls_are_where_httpx_would_send_the_paths(base: str) -> None:
    unused = httpx.MockTransport(lambda request: httpx.Response(200))
    ollama = OllamaClient.connect(base, first_token_timeout_seconds=1, idle_timeout_seconds=1,
                                  transport=unused)  # fmt: skip
    assert ollama._urls["chat"] == ollama._http.build_request("POST", "/api/chat").url
    assert ollama._urls["generate"] == ollama._http.build_request("POST", "/api/generate").url
