"""The simulator's prompt cache: a prompt that extends one its host served is prefilled only past
the shared prefix, as an engine's KV cache would have it; told by both modes and the counters.

In-process behind an ``httpx.ASGITransport``: a fresh app is a fresh host, cache and counters.
No clock is read: the durations asserted are the ones the simulator computes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from simulator.app import PROMPT_CACHE_SIZE, Behaviour, create_app

pytestmark = pytest.mark.anyio

PREFILL = 0.0001  # seconds a token: 100 µs
BASE_EVAL = 1_000_000  # the prompt_eval_duration of a prompt with nothing to prefill
FIRST = [{"role": "system", "content": "you answer briefly"},
         {"role": "user", "content": " ".join(f"word{i}" for i in range(40))}]  # fmt: skip
FIRST_TOKENS = 4 + 41  # role and content words of each message
FOLLOW_UP = [*FIRST, {"role": "assistant", "content": "some answer here"},
             {"role": "user", "content": "and then"}]  # fmt: skip
FOLLOW_UP_TOKENS = FIRST_TOKENS + 4 + 3


def host(**behaviour: Any) -> httpx.AsyncClient:
    app = create_app(Behaviour(tokens=2, token_delay=0, **behaviour))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


@pytest.fixture
async def ollama() -> AsyncIterator[httpx.AsyncClient]:
    async with host() as http:
        yield http


@pytest.fixture
async def vllm() -> AsyncIterator[httpx.AsyncClient]:
    async with host(engine="vllm") as http:
        yield http


async def chat(http: httpx.AsyncClient, messages: list[Any], **options: Any) -> dict[str, Any]:
    """The final line of an Ollama chat, prefilled ``PREFILL`` seconds a token."""
    body = {"model": "llama3.2", "messages": messages,
            "options": {"sim_prefill_delay": PREFILL, **options}}  # fmt: skip
    response = await http.post("/api/chat", json=body)
    assert response.status_code == 200
    final: dict[str, Any] = json.loads(response.content.splitlines()[-1])
    return final


def prefilled(final: dict[str, Any]) -> int:
    """The tokens a final line's ``prompt_eval_duration`` says were not in the cache."""
    return round((int(final["prompt_eval_duration"]) - BASE_EVAL) / (PREFILL * 1e9))


async def counted(http: httpx.AsyncClient) -> tuple[int, int]:
    counters = (await http.get("/_sim/counters")).json()
    return counters["prompt_tokens"], counters["prompt_tokens_cached"]


async def test_a_follow_up_is_prefilled_only_past_the_conversation_so_far(
    ollama: httpx.AsyncClient,
) -> None:
    cold = await chat(ollama, FIRST)
    assert (prefilled(cold), cold["prompt_eval_count"]) == (FIRST_TOKENS, 26)
    assert await counted(ollama) == (FIRST_TOKENS, 0)
    warm = await chat(ollama, FOLLOW_UP)
    assert prefilled(warm) == FOLLOW_UP_TOKENS - FIRST_TOKENS
    assert await counted(ollama) == (FIRST_TOKENS + FOLLOW_UP_TOKENS, FIRST_TOKENS)
    again = await chat(ollama, FOLLOW_UP)  # the same prompt: all of it cached
    assert again["prompt_eval_duration"] == BASE_EVAL


async def test_an_unrelated_prompt_of_the_same_length_is_prefilled_whole(
    ollama: httpx.AsyncClient,
) -> None:
    await chat(ollama, FIRST)
    other = [{"role": "user", "content": " ".join(["other"] * (FOLLOW_UP_TOKENS - 1))}]
    cold = await chat(ollama, other)
    assert prefilled(cold) == FOLLOW_UP_TOKENS
    assert await counted(ollama) == (FIRST_TOKENS + FOLLOW_UP_TOKENS, 0)


async def test_a_model_load_is_told_apart_from_the_prefill(
    ollama: httpx.AsyncClient,
) -> None:
    cold = await chat(ollama, FIRST, sim_first_token_delay=0.002)
    assert cold["load_duration"] == 2_000_000
    assert prefilled(cold) == FIRST_TOKENS


async def test_generate_shares_its_system_prompt(ollama: httpx.AsyncClient) -> None:
    system = "a system prompt of eight words said once"
    for prompt in ("first question", "second one here"):
        body = {"model": "llama3.2", "system": system, "prompt": prompt,
                "options": {"sim_prefill_delay": PREFILL}}  # fmt: skip
        assert (await ollama.post("/api/generate", json=body)).status_code == 200
    assert await counted(ollama) == (10 + 11, 8)


async def test_the_least_recently_served_prompt_is_forgotten(ollama: httpx.AsyncClient) -> None:
    await chat(ollama, FIRST)
    for index in range(PROMPT_CACHE_SIZE):
        await chat(ollama, [{"role": "user", "content": f"filler{index}"}])
    before = await counted(ollama)
    assert prefilled(await chat(ollama, FIRST)) == FIRST_TOKENS
    assert await counted(ollama) == (before[0] + FIRST_TOKENS, before[1])


async def test_vllm_reports_the_cached_tokens_in_its_usage(vllm: httpx.AsyncClient) -> None:
    async def usage(path: str, **body: Any) -> dict[str, Any]:
        asked = {"model": "llama3.2", "sim_prefill_delay": PREFILL, **body}
        found: dict[str, Any] = (await vllm.post(path, json=asked)).json()["usage"]
        return found

    first = await usage("/v1/chat/completions", messages=FIRST)
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    follow_up = await usage("/v1/chat/completions", messages=FOLLOW_UP)
    assert follow_up["prompt_tokens"] == FOLLOW_UP_TOKENS - 4  # contents only, no roles
    assert follow_up["prompt_tokens_details"] == {"cached_tokens": FIRST_TOKENS}
    assert await counted(vllm) == (FIRST_TOKENS + FOLLOW_UP_TOKENS, FIRST_TOKENS)
    await usage("/v1/completions", prompt="one two three")
    extended = await usage("/v1/completions", prompt="one two three four")
    assert extended["prompt_tokens_details"] == {"cached_tokens": 3}


async def test_without_a_prefill_delay_nothing_changes(
    ollama: httpx.AsyncClient, vllm: httpx.AsyncClient
) -> None:
    for _ in range(2):
        final = await chat(ollama, FIRST, sim_prefill_delay=0)
        assert (final["load_duration"], final["prompt_eval_duration"]) == (0, BASE_EVAL)
        body = {"model": "llama3.2", "messages": FIRST}
        usage = (await vllm.post("/v1/chat/completions", json=body)).json()["usage"]
        assert usage == {"prompt_tokens": 43, "completion_tokens": 2, "total_tokens": 45}
    assert await counted(ollama) == (2 * FIRST_TOKENS, FIRST_TOKENS)  # counted all the same
