"""The generation endpoint in-process: requests, answers and errors that need no live stream.

The app runs with its lifespan behind an ``httpx.ASGITransport``, Redis is a real Valkey and
Ollama the simulator at the app's transport seam (``tests.support.in_process``); what needs
tokens to arrive over time is in ``tests/system/test_streaming.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from harness.servers import free_port
from tests.support import sse
from tests.support.bodies import GENERATE, simulator_text
from tests.support.in_process import InProcess, in_process

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(app: InProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with app.client() as http:
        yield http


async def test_stream_is_byte_identical_to_what_ollama_sent(
    client: httpx.AsyncClient, app: InProcess
) -> None:
    """Newlines, CR, quotes, U+2028, emoji and SSE look-alikes arrive exactly as sent."""
    body = {"prompt": "tricky tokens", "options": {"sim_tokens": 300, "sim_token_delay": 0}}
    expected = await simulator_text(app.simulator, body)
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


async def test_get_with_query_streams_like_post(client: httpx.AsyncClient) -> None:
    """An EventSource can only GET: the query carries model, prompt and system."""
    params = {"model": "llama3.2", "prompt": "hi", "system": "be brief"}
    got = await sse.fetch(client, "GET", GENERATE, params=params)
    posted = await sse.fetch(client, "POST", GENERATE, json=params)
    assert got.status == 200
    assert sse.text_of(got.body) == sse.text_of(posted.body) != ""


async def test_json_mode_answers_one_object(client: httpx.AsyncClient, app: InProcess) -> None:
    """stream false: one JSON object, a superset of the seed's GenerateResponse."""
    body = {"prompt": "as json", "stream": False}
    response = await client.post(GENERATE, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["response"] == await simulator_text(app.simulator, {"prompt": "as json"})
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


async def test_ollama_down_is_503(app_env: dict[str, str]) -> None:
    env = {**app_env, "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}"}
    async with (
        in_process(env, upstream=httpx.AsyncHTTPTransport()) as down,
        down.client() as http,
    ):
        response = await http.post(GENERATE, json={"prompt": "a"})
    assert response.status_code == 503
    assert response.json()["error"] == "upstream_unavailable"


async def test_head_opens_no_generation(client: httpx.AsyncClient, app: InProcess) -> None:
    before = (await app.simulator_counters())["started"]
    response = await client.head(GENERATE, params={"prompt": "hi"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == b""
    assert (await app.simulator_counters())["started"] == before
