"""The answer pipeline every surface runs (``app.api.pipeline``), in-process: what it decides once
for all of them is answered in each surface's own error shape."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest

from tests.support.in_process import InProcess

pytestmark = pytest.mark.anyio

Check = Callable[[dict[str, Any]], bool]
NATIVE: Check = lambda body: body["error"] == "invalid_json"  # noqa: E731
OPENAI: Check = lambda body: body["error"]["code"] == "invalid_json"  # noqa: E731
OLLAMA: Check = lambda body: body["error"] == "The request body must be a JSON object."  # noqa: E731


@pytest.mark.parametrize(
    ("path", "shaped"),
    [
        pytest.param("/v1/chats/generate", NATIVE, id="native"),
        pytest.param("/v1/chats/generations", NATIVE, id="native-resource"),
        pytest.param("/v1/chat/completions", OPENAI, id="openai-chat"),
        pytest.param("/v1/completions", OPENAI, id="openai-text"),
        pytest.param("/v1/embeddings", OPENAI, id="openai-embeddings"),
        pytest.param("/api/generate", OLLAMA, id="ollama-generate"),
        pytest.param("/api/chat", OLLAMA, id="ollama-chat"),
        pytest.param("/api/embed", OLLAMA, id="ollama-embed"),
        pytest.param("/api/show", OLLAMA, id="ollama-show"),
    ],
)
async def test_a_body_that_is_not_an_object_is_invalid_json_on_every_surface(
    app: InProcess, path: str, shaped: Check
) -> None:
    """One check for every surface (it was four, and the OpenAI surface's said 422)."""
    async with app.client() as http:
        answer = await http.post(path, json=["prompt"])
    assert answer.status_code == 400
    assert shaped(answer.json())


async def test_the_quotas_headers_go_on_every_answer_of_a_counted_request(app: InProcess) -> None:
    """Counted before its body is read, a malformed request still says what it spent."""
    async with app.client() as http:
        refused = await http.post("/v1/chat/completions", content=b"{nope")
        answered = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "q",
                                                          "stream": False})  # fmt: skip
    assert refused.status_code == 400
    for answer in (refused, answered):
        assert answer.headers["ratelimit-policy"].startswith('"default";q=1000000;w=60')
        assert answer.headers["ratelimit"].startswith('"default";r=')


@pytest.mark.parametrize("path", ["/v1/chats/generate", "/v1/chat/completions", "/api/chat"])
async def test_a_client_that_hangs_up_mid_body_is_no_error_of_ours(
    app: InProcess, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a body, then the connection closes (wrk does, at the end of a run): answered 499
    for the log line, with no traceback logged as the service's error."""
    messages: Iterator[dict[str, Any]] = iter([
        {"type": "http.request", "body": b'{"prompt": "half', "more_body": True},
        {"type": "http.disconnect"},
    ])  # fmt: skip
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json")],
             "client": ("203.0.113.9", 50000), "server": ("bib.test", 80)}  # fmt: skip
    await app.asgi(scope, receive, send)
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
