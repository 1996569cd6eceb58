"""The official ``ollama`` client (from PyPI) against the real app over sockets, as people
use it: ``OLLAMA_HOST`` (here ``host=``) pointed at the service instead of at Ollama."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import ollama
import orjson
import pytest

from harness import servers
from harness.servers import Server, simulator_counters
from tests.support.bodies import unique

pytestmark = pytest.mark.system

Clients = Callable[[Server], ollama.Client]


@pytest.fixture
def client_of() -> Iterator[Clients]:
    made: list[ollama.Client] = []

    def make(server: Server) -> ollama.Client:
        made.append(ollama.Client(host=server.url, timeout=20))
        return made[-1]

    yield make
    for client in made:
        client.close()  # type: ignore[no-untyped-call]


def ask(label: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": unique(label)}]


def test_chat_streamed_and_whole_from_one_generation(service: Server, client_of: Clients) -> None:
    client = client_of(service)
    messages = ask("ollama chat")
    parts = list(client.chat(model="llama3.2", messages=messages, stream=True))
    *tokens, last = parts
    assert len(tokens) == 12
    assert not any(p.done for p in tokens)
    assert last.done
    assert last.done_reason == "stop"
    assert last.eval_count == 12
    text = "".join(p.message.content or "" for p in tokens)
    whole = client.chat(model="llama3.2", messages=messages)
    assert whole.message.content == text
    assert whole.message.role == "assistant"
    assert whole.done
    assert whole.eval_count == 12
    native = httpx.post(service.url + "/v1/chats/generate",
                        json={"messages": messages, "stream": False}, timeout=20)  # fmt: skip
    assert native.headers["x-cache"] == "HIT"
    assert native.json()["response"] == text


def test_generate_streamed_and_whole(service: Server, client_of: Clients) -> None:
    client = client_of(service)
    prompt = unique("ollama generate")
    parts = list(client.generate(model="llama3.2", prompt=prompt, stream=True,
                                 options={"num_predict": 4}))  # fmt: skip
    assert parts[-1].done
    assert parts[-1].done_reason == "length"
    text = "".join(p.response or "" for p in parts)
    whole = client.generate(model="llama3.2", prompt=prompt, options={"num_predict": 4})
    assert whole.response == text
    assert whole.eval_count == 4


def test_model_lists_show_and_version(service: Server, client_of: Clients) -> None:
    client = client_of(service)
    listed = client.list()
    assert {m.model for m in listed.models} >= {"llama3.2:latest", "qwen3:latest"}
    client.generate(model="qwen3", prompt=unique("load"))
    assert "qwen3:latest" in {m.model for m in client.ps().models}
    shown = client.show("llama3.2")
    assert shown.details is not None
    assert shown.details.family == "llama"
    assert httpx.get(service.url + "/api/version").json()["version"]
    root = httpx.get(service.url + "/")
    assert root.status_code == 200
    assert root.text == "Ollama is running"


def test_errors_are_response_errors_with_ollamas_status(
    service: Server, client_of: Clients
) -> None:
    client = client_of(service)
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="nonexistent", messages=ask("404"))
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as management:
        client.pull("llama3.2")
    assert management.value.status_code == 403
    assert "Ollama host" in management.value.error
    with pytest.raises(ollama.ResponseError) as unsupported:
        client.generate(model="llama3.2", prompt="x", suffix="y")
    assert unsupported.value.status_code == 400
    assert "suffix" in unsupported.value.error
    with pytest.raises(ollama.ResponseError) as shown:
        client.show("nonexistent")
    assert shown.value.status_code == 404


def test_rate_limited_is_429(start_service: Callable[..., Server], client_of: Clients) -> None:
    limited = client_of(start_service(RATE_LIMIT_MAX="1"))
    limited.generate(model="llama3.2", prompt=unique("first"))
    with pytest.raises(ollama.ResponseError) as refused:
        limited.generate(model="llama3.2", prompt=unique("second"))
    assert refused.value.status_code == 429


def test_an_error_mid_stream_is_raised(service: Server, client_of: Clients) -> None:
    stream = client_of(service).chat(
        model="llama3.2", messages=ask("mid-stream"), stream=True,
        options={"sim_fault": "error", "sim_fault_after": 3},
    )  # fmt: skip
    received: list[object] = []
    with pytest.raises(ollama.ResponseError):
        received.extend(stream)  # what came before the error stays
    assert len(received) == 3


def test_no_blank_line_through_a_slow_first_token(service: Server) -> None:
    body = {"model": "llama3.2", "messages": ask("slow"),
            "options": {"sim_first_token_delay": 2.5, "sim_tokens": 3}}  # fmt: skip
    with httpx.stream("POST", service.url + "/api/chat", json=body, timeout=20) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["x-cache"] == "MISS"
        assert response.headers["x-generation-id"]
        raw = response.read()
    lines = raw.split(b"\n")
    assert lines[-1] == b""
    assert all(lines[:-1])
    parsed = [orjson.loads(line) for line in lines[:-1]]
    assert len(parsed) == 4
    assert parsed[-1]["done"] is True


def test_embed_and_the_legacy_embeddings(service: Server, client_of: Clients) -> None:
    client = client_of(service)
    text = unique("ollama embed")
    first = client.embed(model="llama3.2", input=text)
    again = client.embed(model="llama3.2", input=[text])  # a string is a list of one
    assert len(first.embeddings) == 1
    assert again.embeddings == first.embeddings
    legacy = client.embeddings(model="llama3.2", prompt=text)
    assert len(legacy.embedding) == 8
    with pytest.raises(ollama.ResponseError) as missing:
        client.embed(model="nonexistent", input="x")
    assert missing.value.status_code == 404


def test_model_management_reaches_every_host_when_allowed(
    start_service: Callable[..., Server], client_of: Clients
) -> None:
    hosts = [servers.simulator().start() for _ in range(2)]
    try:
        urls = ",".join(h.url for h in hosts)
        client = client_of(start_service(OLLAMA_HOSTS=urls, OLLAMA_MANAGEMENT="true"))
        assert client.pull("llama3.2").status == "success"
        streamed = client.pull("llama3.2", stream=True)  # the last host's progress, once done
        assert [p.status for p in streamed] == ["pulling manifest", "success"]
        with pytest.raises(ollama.ResponseError) as missing:
            client.delete("nonexistent")
        assert missing.value.status_code == 404
        assert [simulator_counters(h)["managed"] for h in hosts] == [3, 2]  # the 404 stops it
    finally:
        for host in hosts:
            host.stop()
