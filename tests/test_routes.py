"""The generation endpoint over real sockets: uvicorn, the simulator and Valkey."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from tests import sse
from tests.servers import Server, simulator_counters

pytestmark = pytest.mark.anyio

GENERATE = "/v1/chats/generate"


async def simulator_text(ollama: Server, body: dict[str, Any]) -> str:
    """What Ollama (the simulator) itself streams for ``body``: the reference text."""
    async with httpx.AsyncClient(base_url=ollama.url) as direct:
        response = await direct.post("/api/generate", json={"model": "llama3.2", **body})
    lines = [httpx.Response(200, content=line).json() for line in response.content.splitlines()]
    return "".join(line["response"] for line in lines)


async def test_stream_is_byte_identical_to_what_ollama_sent(
    client: httpx.AsyncClient, ollama: Server
) -> None:
    """Newlines, CR, quotes, U+2028, emoji and SSE look-alikes arrive exactly as sent."""
    body = {"prompt": "tricky tokens", "options": {"sim_tokens": 300, "sim_token_delay": 0}}
    expected = await simulator_text(ollama, body)
    for tricky in ("\n", "\r", "\r\n", '"', "\u2028", "🍾", "data: x", ": not a comment"):
        assert tricky in expected  # the reference really contains what we claim to test
    received = await sse.fetch(client, "POST", GENERATE, json=body)
    assert received.status == 200
    assert sse.text_of(received.body) == expected


async def test_stream_events_and_headers(client: httpx.AsyncClient) -> None:
    """retry, start, numbered tokens with one-line JSON data, then done with Ollama's stats."""
    received = await sse.fetch(client, "POST", GENERATE, json={"prompt": "hi", "model": "llama3.2"})
    assert received.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert received.headers["cache-control"] == "no-cache"
    assert received.headers["x-accel-buffering"] == "no"
    assert received.headers["x-cache"] == "MISS"
    items = received.items()
    assert items[0] == sse.Retry(2000)
    start, *tokens, done = received.events()
    generation = start.json()["generation"]
    assert start.type == "start"
    assert start.json() == {"generation": generation, "model": "llama3.2", "cached": False}
    assert generation.startswith("g_")
    assert len(generation) == 24
    assert [t.type for t in tokens] == ["token"] * 12
    assert [t.last_event_id for t in tokens] == [f"{generation}.{n}" for n in range(12)]
    assert done.type == "done"
    assert done.last_event_id == f"{generation}.done"
    stats = done.json()
    assert stats["done_reason"] == "stop"
    assert stats["eval_count"] == 12
    assert stats["cached"] is False
    assert {"total_duration", "prompt_eval_count", "eval_duration"} <= stats.keys()
    for line in received.body.split(b"\n"):
        if line.startswith(b"data: "):
            httpx.Response(200, content=line[6:]).json()  # every data line is whole JSON


async def test_tokens_leave_as_soon_as_ollama_sends_them(client: httpx.AsyncClient) -> None:
    """With 200 ms between tokens, the first token arrives long before the generation ends."""
    body = {"prompt": "slowly", "options": {"sim_tokens": 5, "sim_token_delay": 0.2}}
    received = await sse.fetch(client, "POST", GENERATE, json=body)
    first = received.arrival_of(b".0\nevent: token")
    second = received.arrival_of(b".1\nevent: token")
    done = received.arrival_of(b"\nevent: done\n")
    assert done - first > 0.6  # four more gaps of 0.2 s followed the first token
    assert second - first > 0.1


async def test_get_with_query_streams_like_post(client: httpx.AsyncClient) -> None:
    """An EventSource can only GET: the query carries model, prompt and system."""
    params = {"model": "llama3.2", "prompt": "hi", "system": "be brief"}
    got = await sse.fetch(client, "GET", GENERATE, params=params)
    posted = await sse.fetch(client, "POST", GENERATE, json=params)
    assert got.status == 200
    assert sse.text_of(got.body) == sse.text_of(posted.body) != ""


async def test_json_mode_answers_one_object(client: httpx.AsyncClient, ollama: Server) -> None:
    """stream false: one JSON object, a superset of the seed's GenerateResponse."""
    body = {"prompt": "as json", "stream": False}
    response = await client.post(GENERATE, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["response"] == await simulator_text(ollama, {"prompt": "as json"})
    assert answer["model"] == "llama3.2"
    assert answer["done"] is True
    assert answer["cached"] is False
    assert answer["done_reason"] == "stop"
    assert {"created_at", "eval_count", "prompt_eval_count", "total_duration"} <= answer.keys()


async def test_chat_relays_thinking_and_tool_calls(client: httpx.AsyncClient) -> None:
    """Chat thinking arrives as {"thinking"}, tool calls as {"tool_calls"}."""
    messages = [{"role": "user", "content": "weather?"}]
    thinking = await sse.fetch(
        client, "POST", GENERATE, json={"model": "qwen3", "messages": messages, "think": True}
    )
    payloads = [e.json() for e in thinking.events() if e.type == "token"]
    assert "".join(p.get("thinking", "") for p in payloads) == " Let me think."
    assert all(p.get("text") for p in payloads if "thinking" not in p)
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    called = await sse.fetch(client, "POST", GENERATE, json={"messages": messages, "tools": [tool]})
    (token,) = [e.json() for e in called.events() if e.type == "token"]
    assert token == {"tool_calls": [{"function": {"name": "get_weather", "arguments": {"q": "x"}}}]}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(b"{nope", 400, "invalid_json", id="not-json"),
        pytest.param(b"[1, 2]", 400, "invalid_json", id="not-an-object"),
        pytest.param(b'{"model": "llama3.2"}', 422, "invalid_request", id="no-prompt"),
        pytest.param(
            b'{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}',
            422,
            "invalid_request",
            id="prompt-and-messages",
        ),
        pytest.param(b'{"prompt": "a", "model": "bad name!"}', 422, "invalid_request", id="model"),
        pytest.param(b'{"prompt": "a", "temperature": 1}', 422, "invalid_request", id="unknown"),
        pytest.param(b'{"prompt": "a", "model": "gpt-9"}', 404, "model_not_found", id="model-404"),
        pytest.param(
            b'{"prompt": "a", "options": {"sim_fault": "500"}}', 502, "upstream_error", id="5xx"
        ),
        pytest.param(
            b'{"prompt": "a", "options": {"sim_fault": "busy"}}',
            503,
            "upstream_unavailable",
            id="busy",
        ),
        pytest.param(b'{"prompt": "a", "think": true}', 422, "invalid_request", id="ollama-400"),
        pytest.param(
            b'{"prompt": "a", "options": {"sim_fault": "error", "sim_fault_after": 0}}',
            502,
            "upstream_error",
            id="error-line-first",
        ),
    ],
)
async def test_errors_before_the_stream_are_problem_json(
    client: httpx.AsyncClient, body: bytes, status: int, code: str
) -> None:
    """Errors known before the first token get their own status and an RFC 9457 body."""
    response = await client.post(GENERATE, content=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["error"] == code
    assert problem["title"]
    assert problem["detail"]
    assert "Traceback" not in response.text


async def test_validation_names_every_offending_field(client: httpx.AsyncClient) -> None:
    body = {"prompt": 3, "messages": "x", "options": [], "stream": "yes"}
    problem = (await client.post(GENERATE, json=body)).json()
    assert set(problem["fields"]) == {"prompt", "messages", "options", "stream"}


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"prompt": "' + b"a" * (1024 * 1024) + b'"}'
    response = await client.post(GENERATE, content=body)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


async def test_unknown_path_and_wrong_method(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v2/nothing")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    wrong = await client.put(GENERATE)
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")
    assert wrong.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        pytest.param("error", "upstream_error", id="error-line"),
        pytest.param("drop", "upstream_error", id="dropped-connection"),
        pytest.param("garbage", "upstream_error", id="garbage"),
        pytest.param("hang", "upstream_timeout", id="silence-past-idle-timeout"),
    ],
)
async def test_failure_after_stream_began_is_an_error_event(
    client: httpx.AsyncClient, fault: str, code: str
) -> None:
    """After tokens went out the status is 200; the stream ends with one error event."""
    body = {"prompt": "fails", "options": {"sim_fault": fault, "sim_fault_after": 3}}
    received = await sse.fetch(client, "POST", GENERATE, json=body)
    assert received.status == 200
    start, *tokens, error = received.events()
    generation = start.json()["generation"]
    assert len(tokens) == 3
    assert error.type == "error"
    assert error.last_event_id == f"{generation}.error"
    assert error.json()["error"] == code
    assert error.json()["detail"]


async def test_ollama_down_is_503(start_service: Callable[..., Server]) -> None:
    service = start_service(OLLAMA_HOST=f"http://127.0.0.1:{_closed_port()}")
    async with httpx.AsyncClient(base_url=service.url) as http:
        response = await http.post(GENERATE, json={"prompt": "a"})
    assert response.status_code == 503
    assert response.json()["error"] == "upstream_unavailable"


async def test_no_first_token_in_time_is_504(start_service: Callable[..., Server]) -> None:
    """An upstream timeout shorter than the heartbeat still fails with a status."""
    service = start_service(UPSTREAM_TIMEOUT="0.5", HEARTBEAT_INTERVAL="5")
    body = {"prompt": "a", "options": {"sim_fault": "hang", "sim_fault_after": 0}}
    async with httpx.AsyncClient(base_url=service.url) as http:
        response = await http.post(GENERATE, json=body)
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"


async def test_long_model_load_commits_to_the_stream_with_pings(
    start_service: Callable[..., Server],
) -> None:
    """Silent Ollama past the first heartbeat: 200 at once, then pings until the first token."""
    service = start_service(HEARTBEAT_INTERVAL="0.3")
    body = {"prompt": "a", "options": {"sim_first_token_delay": 1.2, "sim_tokens": 2}}
    async with httpx.AsyncClient(base_url=service.url) as http:
        received = await sse.fetch(http, "POST", GENERATE, json=body)
    assert received.status == 200
    assert received.arrival_of(b"\nevent: start\n") < 0.9
    items = received.items()
    first_token = next(i for i, item in enumerate(items) if getattr(item, "type", "") == "token")
    pings = [item for item in items[:first_token] if item == sse.Comment("ping")]
    assert len(pings) >= 3  # at 0.3 s when the response started, then every 0.3 s
    assert [e.type for e in received.events()] == ["start", "token", "token", "done"]


async def test_head_opens_no_generation(client: httpx.AsyncClient, ollama: Server) -> None:
    before = simulator_counters(ollama)["started"]
    response = await client.head(GENERATE, params={"prompt": "hi"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == b""
    assert simulator_counters(ollama)["started"] == before


async def test_client_disconnect_cancels_upstream(
    client: httpx.AsyncClient, ollama: Server
) -> None:
    """Hanging up mid-stream closes the request to Ollama within a second."""
    before = simulator_counters(ollama)
    body = {"prompt": "long", "options": {"sim_tokens": 200, "sim_token_delay": 0.05}}
    await sse.fetch(client, "POST", GENERATE, json=body, stop_after=b".2\nevent: token")
    hung_up = time.monotonic()
    while simulator_counters(ollama)["cancelled"] == before["cancelled"]:
        assert time.monotonic() - hung_up < 1.0, "upstream still running a second after hang-up"
        await anyio.sleep(0.02)
    assert simulator_counters(ollama)["completed"] == before["completed"]


def _closed_port() -> int:
    from tests.servers import free_port

    return free_port()
