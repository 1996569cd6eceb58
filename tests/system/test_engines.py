"""A fleet of two engines over real sockets: the Ollama simulator and the simulator as vLLM
(``--engine vllm``, OpenAI's API), behind one app with ``UPSTREAMS``. Every surface answers
from the vLLM engine what the engine itself says; models go where they live; a hang-up stops
the engine's generation; a dead engine's models are 503 while the other's still answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from harness import servers
from harness.servers import simulator_counters
from tests.support import sse
from tests.support.bodies import GENERATE, unique
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.system, pytest.mark.anyio]

MODEL = "mistral"  # only the vLLM engine has it, llama3.2 only Ollama, qwen3 both


@pytest.fixture(scope="module")
def vllm() -> Iterator[servers.Server]:
    server = servers.simulator("--engine", "vllm", "--models", f"{MODEL},qwen3", "--tokens", "12",
                               "--token-delay", "0.01").start()  # fmt: skip
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fleet(service_env: dict[str, str], simulator: servers.Server,
          vllm: servers.Server) -> Iterator[servers.Server]:  # fmt: skip
    env = {k: v for k, v in service_env.items() if k not in ("OLLAMA_HOST", "OLLAMA_HOSTS")}
    upstreams = f"{simulator.url},{vllm.url};engine=vllm;key=sk-test"
    server = servers.app({**env, "UPSTREAMS": upstreams, "CACHE_TTL": "0"}).start("/livez")
    yield server
    server.stop()


def direct(vllm: servers.Server, content: str, **fields: Any) -> str:
    """What the engine itself answers for one user message."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}
    answer = httpx.post(vllm.url + "/v1/chat/completions", json=body, timeout=20).json()
    return str(answer["choices"][0]["message"]["content"])


def test_every_surface_answers_what_the_engine_says(fleet: servers.Server,
                                                    vllm: servers.Server) -> None:  # fmt: skip
    prompt = unique("engines")
    expected = direct(vllm, prompt)
    messages: list[Any] = [{"role": "user", "content": prompt}]
    native = httpx.post(fleet.url + GENERATE, json={"model": MODEL, "prompt": prompt}, timeout=20)
    assert sse.text_of(native.content) == expected
    with (openai.OpenAI(base_url=fleet.url + "/v1", api_key="x") as sdk,
          anthropic.Anthropic(base_url=fleet.url, api_key="x") as claude):  # fmt: skip
        chat = sdk.chat.completions.create(model=MODEL, messages=messages)
        assert chat.choices[0].message.content == expected
        assert chat.usage is not None
        assert chat.usage.completion_tokens > 0
        assert sdk.responses.create(model=MODEL, input=prompt).output_text == expected
        message = claude.messages.create(model=MODEL, max_tokens=100, messages=messages)
        assert message.content[0].type == "text"
        assert message.content[0].text == direct(vllm, prompt, max_tokens=100)
    library = ollama.Client(host=fleet.url, timeout=20)
    try:
        assert library.chat(model=MODEL, messages=messages).message.content == expected
    finally:
        library.close()  # type: ignore[no-untyped-call]


def test_models_go_where_they_live_and_are_listed_once(fleet: servers.Server,
                                                       simulator: servers.Server,
                                                       vllm: servers.Server) -> None:  # fmt: skip
    before = simulator_counters(simulator)["started"], simulator_counters(vllm)["started"]
    for model in ("llama3.2", MODEL):
        answer = httpx.post(fleet.url + GENERATE, json={"model": model, "prompt": unique("route"),
                                                        "stream": False}, timeout=20)  # fmt: skip
        assert answer.status_code == 200, answer.text
    after = simulator_counters(simulator)["started"], simulator_counters(vllm)["started"]
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    names = [m["name"] for m in httpx.get(fleet.url + "/api/tags").json()["models"]]
    assert sorted(names) == ["llama3.2:latest", MODEL, "qwen3:latest"]  # qwen3 once
    health = httpx.get(fleet.url + "/v1/health").json()
    assert [(h["url"], h["engine"]) for h in health["ollama_hosts"]] == [
        (simulator.url, "ollama"), (vllm.url, "vllm")]  # fmt: skip
    unknown = httpx.post(fleet.url + GENERATE, json={"model": "nowhere", "prompt": "x"})
    assert unknown.status_code == 404


async def test_a_hang_up_stops_the_engines_generation(service_env: dict[str, str]) -> None:
    slow = servers.simulator("--engine", "vllm", "--models", MODEL, "--tokens", "200",
                             "--token-delay", "0.05").start()  # fmt: skip
    env = {k: v for k, v in service_env.items() if k not in ("OLLAMA_HOST", "OLLAMA_HOSTS")}
    app = servers.app({**env, "UPSTREAMS": f"{slow.url};engine=vllm",
                       "RESUME_GRACE": "0"}).start("/livez")  # fmt: skip
    try:
        body = {"model": MODEL, "prompt": unique("hang up")}
        async with (httpx.AsyncClient(base_url=app.url, timeout=20) as http,
                    http.stream("POST", GENERATE, json=body) as response):  # fmt: skip
            async for chunk in response.aiter_bytes():
                if b"event: token" in chunk:
                    break  # the engine is generating
        # closed within a second (the suite's RESUME_GRACE is 0), with room for a busy machine
        await wait_for(lambda: simulator_counters(slow)["cancelled"] == 1, seconds=2)
        assert simulator_counters(slow)["completed"] == 0
    finally:
        app.stop()
        slow.stop()


def test_an_option_the_engine_cannot_honour_is_refused_naming_it(fleet: servers.Server) -> None:
    body = {"model": MODEL, "prompt": "x", "stream": False, "options": {"mirostat": 2}}
    refused = httpx.post(fleet.url + GENERATE, json=body, timeout=20)
    assert refused.status_code == 400
    assert "options.mirostat" in refused.text


def test_a_dead_engine_is_503_for_its_models_only(service_env: dict[str, str],
                                                  simulator: servers.Server) -> None:  # fmt: skip
    doomed = servers.simulator("--engine", "vllm", "--models", MODEL).start()
    env = {k: v for k, v in service_env.items() if k not in ("OLLAMA_HOST", "OLLAMA_HOSTS")}
    app = servers.app({**env, "UPSTREAMS": f"{simulator.url},{doomed.url};engine=vllm",
                       "OLLAMA_REFRESH_INTERVAL": "0.2"}).start("/livez")  # fmt: skip
    try:
        doomed.stop()
        gone = httpx.post(app.url + GENERATE, json={"model": MODEL, "prompt": "x",
                                                    "stream": False}, timeout=20)  # fmt: skip
        assert gone.status_code == 503  # where it lives, nothing answers
        here = httpx.post(app.url + GENERATE, json={"model": "llama3.2", "prompt": "x",
                                                    "stream": False}, timeout=20)  # fmt: skip
        assert here.status_code == 200
        assert httpx.get(app.url + "/readyz").status_code == 200
    finally:
        app.stop()
        doomed.stop()


def test_count_tokens_is_the_engines_own_count(fleet: servers.Server,
                                               vllm: servers.Server) -> None:  # fmt: skip
    """An engine with a tokenizer counts a Messages request exactly: what its usage says."""
    content = unique("count these words please")
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    counted = httpx.post(fleet.url + "/v1/messages/count_tokens", json=body, timeout=20).json()
    usage = httpx.post(vllm.url + "/v1/chat/completions", json=body, timeout=20).json()["usage"]
    assert counted == {"input_tokens": usage["prompt_tokens"]}


async def test_an_engines_own_queue_steers_generations_elsewhere(
    service_env: dict[str, str],
) -> None:
    """Load the service did not send (other clients of the engine) shows only in the engine's
    metrics: the host whose vLLM says it has requests waiting gets none of ours."""
    busy, idle = (servers.simulator("--engine", "vllm", "--models", MODEL, "--max-num-seqs", "1",
                                    "--tokens", "200", "--token-delay", "0.05").start()
                  for _ in range(2))  # fmt: skip
    env = {k: v for k, v in service_env.items() if k not in ("OLLAMA_HOST", "OLLAMA_HOSTS")}
    app = servers.app({**env, "UPSTREAMS": f"{busy.url};engine=vllm,{idle.url};engine=vllm",
                       "OLLAMA_REFRESH_INTERVAL": "0.2"}).start("/livez")  # fmt: skip
    body = {"model": MODEL, "messages": [{"role": "user", "content": "elsewhere"}]}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            others = [asyncio.create_task(http.post(busy.url + "/v1/chat/completions",
                                                    json=body)) for _ in range(3)]  # fmt: skip
            await wait_for(lambda: simulator_counters(busy)["waiting"] == 2, seconds=5)
            await asyncio.sleep(0.6)  # the app's next probes read the metrics
            before = simulator_counters(idle)["started"]
            for _ in range(4):  # one after another: each sees 2 waiting there, none here
                ask = {"model": MODEL, "prompt": unique("ours"), "options": {"num_predict": 2}}
                assert (await http.post(app.url + GENERATE, json=ask)).status_code == 200
            assert simulator_counters(idle)["started"] - before == 4
            assert simulator_counters(busy)["started"] == 3  # the others' only
            for other in others:
                other.cancel()
    finally:
        app.stop()
        busy.stop()
        idle.stop()


def test_a_raw_prompt_is_the_engines_text_completion(fleet: servers.Server,
                                                     vllm: servers.Server) -> None:  # fmt: skip
    prompt = unique("raw")
    body = {"model": MODEL, "prompt": prompt}
    direct_text = httpx.post(vllm.url + "/v1/completions", json=body,
                             timeout=20).json()["choices"][0]["text"]  # fmt: skip
    answer = httpx.post(fleet.url + "/api/generate", json={**body, "raw": True, "stream": False},
                        timeout=20)  # fmt: skip
    assert answer.json()["response"] == direct_text
