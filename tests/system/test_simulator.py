"""The simulator speaks Ollama's HTTP API the way Ollama does."""

from __future__ import annotations

from collections.abc import Mapping

import anyio
import httpx
import orjson
import pytest

from harness import servers
from harness.servers import Server, simulator_counters

pytestmark = [pytest.mark.anyio, pytest.mark.system]


async def test_generate_streams_ndjson_with_a_final_stats_line(simulator: Server) -> None:
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        response = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "hi"})
    assert response.headers["content-type"] == "application/x-ndjson"
    assert "server" not in response.headers
    *tokens, final = [orjson.loads(line) for line in response.content.splitlines()]
    assert len(tokens) == 12
    assert all(set(t) == {"model", "created_at", "response", "done"} for t in tokens)
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["eval_count"] == 12
    assert final["total_duration"] > 0
    assert {"context", "load_duration", "prompt_eval_count", "eval_duration"} <= final.keys()


async def test_same_request_same_text_other_request_other_text(simulator: Server) -> None:
    async def text(prompt: str) -> bytes:
        async with httpx.AsyncClient(base_url=simulator.url) as http:
            body = {"model": "llama3.2", "prompt": prompt}
            lines = (await http.post("/api/generate", json=body)).content.splitlines()
        return b"".join(orjson.loads(line)["response"].encode() for line in lines)

    assert await text("a") == await text("a") != await text("b")


async def test_num_predict_ends_with_length(simulator: Server) -> None:
    body = {"model": "llama3.2", "prompt": "a", "options": {"num_predict": 3}}
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        lines = (await http.post("/api/generate", json=body)).content.splitlines()
    assert len(lines) == 4
    assert orjson.loads(lines[-1])["done_reason"] == "length"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        pytest.param({"model": "gpt-9", "prompt": "a"}, 404,
                     'model "gpt-9" not found, try pulling it first', id="unknown-model"),
        pytest.param({"prompt": "a"}, 400, "model is required", id="no-model"),
        pytest.param({"model": "llama3.2", "prompt": "a", "think": True}, 400,
                     '"llama3.2" does not support thinking', id="no-thinking"),
        pytest.param({"model": "llama3.2", "prompt": "a", "options": {"sim_fault": "busy"}}, 503,
                     "server busy, please try again.  maximum pending requests exceeded",
                     id="busy"),
    ],
)  # fmt: skip
async def test_errors_have_ollamas_status_and_body(
    simulator: Server, body: dict[str, object], status: int, error: str
) -> None:
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        response = await http.post("/api/generate", json=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.content == orjson.dumps({"error": error})


async def test_tags_version_and_root(simulator: Server) -> None:
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        assert (await http.get("/")).text == "Ollama is running"
        assert (await http.get("/api/version")).json()["version"]
        models = (await http.get("/api/tags")).json()["models"]
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= models[0].keys()


async def test_counters_tell_completed_from_cancelled(simulator: Server) -> None:
    before = simulator_counters(simulator)
    body = {"model": "llama3.2", "prompt": "a", "options": {"sim_token_delay": 0.05}}
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        await http.post("/api/generate", json={"model": "llama3.2", "prompt": "a"})
        async with http.stream("POST", "/api/generate", json=body) as response:
            async for _ in response.aiter_raw():
                break
    after = simulator_counters(simulator)
    for _ in range(50):  # the hang-up reaches the simulator a moment later
        if after["cancelled"] > before["cancelled"]:
            break
        await anyio.sleep(0.02)
        after = simulator_counters(simulator)
    assert after["started"] - before["started"] == 2
    assert after["completed"] - before["completed"] == 1
    assert after["cancelled"] - before["cancelled"] == 1


def chat_body(words: int, *extra: dict[str, str], **options: float) -> dict[str, object]:
    """A chat: a user message of ``words`` words (with its role 1 + ``words`` tokens), ``extra``."""
    message = {"role": "user", "content": " ".join(f"w{i}" for i in range(words))}
    return {"model": "llama3.2", "messages": [message, *extra], "options": options}


async def test_a_host_prefills_only_what_its_prompt_cache_lacks() -> None:
    """Started with ``--prefill-delay``: a follow-up is prefilled past the turn it extends, an
    unrelated prompt as long is prefilled whole (told by ``prompt_eval_duration``, 1 ms plus the
    prefill) and the counters add up the tokens seen and found cached."""
    host = servers.simulator("--prefill-delay", "0.0001", "--tokens", "2", "--token-delay", "0")
    host.start()
    try:

        async def prefilled(body: Mapping[str, object], path: str = "/api/chat") -> int:
            async with httpx.AsyncClient(base_url=host.url) as http:
                response = await http.post(path, json=body)
            final = orjson.loads(response.content.splitlines()[-1])
            return round((int(final["prompt_eval_duration"]) - 1_000_000) / 100_000)

        reply = {"role": "assistant", "content": "an answer"}
        assert await prefilled(chat_body(30)) == 31  # "user" and 30 words
        assert await prefilled(chat_body(30, reply, {"role": "user", "content": "more"})) == 5
        assert await prefilled(chat_body(30, sim_prefill_delay=0.0002)) == 0  # seen: all cached
        other = {"model": "llama3.2", "prompt": " ".join(f"other{i}" for i in range(36))}
        assert await prefilled(other, "/api/generate") == 36
        counters = simulator_counters(host)
    finally:
        host.stop()
    assert (counters["prompt_tokens"], counters["prompt_tokens_cached"]) == (31 + 36 + 31 + 36, 62)


async def test_without_a_prefill_delay_a_prompt_costs_nothing_more(simulator: Server) -> None:
    body = chat_body(30)
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        for _ in range(2):
            response = await http.post("/api/chat", json=body)
            final = orjson.loads(response.content.splitlines()[-1])
            assert (final["load_duration"], final["prompt_eval_duration"]) == (0, 1_000_000)
