"""Who may use what, over real sockets, on two replicas: a key's models (its allow-list) on every
surface through the real clients, the model lists each key sees, aliases through the OpenAI and
Anthropic SDKs served from their target's cache, and keys that expire, change or carry notes."""

from __future__ import annotations

import time
from collections.abc import Callable

import anthropic
import httpx
import ollama
import openai
import pytest
from anthropic.types import MessageParam

from harness.servers import Server
from tests.support.bodies import unique
from tests.support.keys import keys_command as keys
from tests.support.keys import made_key as made

pytestmark = pytest.mark.system

ALIASES = "gpt-4o=llama3.2,claude-sonnet-4-5=llama3.2,big=qwen3"


ASKED = [{"role": "user", "content": "q"}]
NOT_YOURS = [
    ("/v1/chats/generate", {"model": "qwen3", "prompt": "q"}),
    ("/v1/chats/generations", {"model": "big", "prompt": "q"}),
    ("/v1/completions", {"model": "qwen3", "prompt": "q"}),
    ("/v1/messages/count_tokens", {"model": "qwen3", "messages": ASKED}),
    ("/api/generate", {"model": "qwen3:latest", "prompt": "q"}),
    ("/api/embed", {"model": "big", "input": "q"}),
    ("/api/show", {"model": "qwen3"}),
]


def _replicas(start_service: Callable[..., Server]) -> tuple[Server, Server]:
    env = {"AUTH": "required", "MODEL_ALIASES": ALIASES}
    return start_service(**env), start_service(**env)


def test_a_keys_models_on_every_surface_and_in_its_lists(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    one, other = _replicas(start_service)
    key = made(redis_url, "intern", "--models", "llama3.2", "--rate-limit", "100")
    wide = made(redis_url, "research")  # every model
    with openai.OpenAI(base_url=one.url + "/v1", api_key=key, max_retries=0) as sdk:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            sdk.chat.completions.create(model="qwen3", messages=[
                {"role": "user", "content": unique("not yours")}])  # fmt: skip
        assert (refused.value.code, refused.value.param) == ("model_not_allowed", "model")
        with pytest.raises(openai.PermissionDeniedError):
            sdk.embeddings.create(model="big", input="an alias of a model not yours")
        with pytest.raises(openai.PermissionDeniedError):
            sdk.responses.create(model="qwen3", input=unique("not yours"))
        listed = [model.id for model in sdk.models.list()]
        raw = sdk.chat.completions.with_raw_response.create(model="llama3.2", messages=[
            {"role": "user", "content": unique("yours")}])  # fmt: skip
    assert listed == ["llama3.2:latest", "gpt-4o", "claude-sonnet-4-5"]  # not qwen3, nor big
    assert raw.headers["ratelimit"].startswith('"default";r=99;')  # the refusals counted nothing
    claude = anthropic.Anthropic(base_url=other.url, api_key=key, max_retries=0)
    with claude, pytest.raises(anthropic.PermissionDeniedError) as denied:
        claude.messages.create(model="big", max_tokens=16, messages=[
            {"role": "user", "content": unique("not yours")}])  # fmt: skip
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    with anthropic.Anthropic(base_url=other.url, api_key=key, max_retries=0) as claude:
        assert [m.id for m in claude.models.list()] == listed  # the Anthropic shape, paged
    client = ollama.Client(host=other.url, headers={"Authorization": f"Bearer {key}"})
    try:
        with pytest.raises(ollama.ResponseError) as forbidden:
            client.chat(model="qwen3", messages=[{"role": "user", "content": unique("no")}])
        assert [m.model for m in client.list().models] == listed
    finally:
        client._client.close()
    assert forbidden.value.status_code == 403
    for path, body in NOT_YOURS:  # the other surfaces, over the same sockets
        answer = httpx.post(other.url + path, json=body, headers={"X-API-Key": key}, timeout=20)
        assert answer.status_code == 403, (path, answer.text)
    query = httpx.get(other.url + "/v1/chats/generate", headers={"X-API-Key": key},
                      params={"model": "qwen3", "prompt": "q"}, timeout=20)  # fmt: skip
    assert (query.status_code, query.json()["error"]) == (403, "model_not_allowed")
    everything = httpx.get(one.url + "/api/tags", headers={"X-API-Key": wide}).json()
    assert [m["name"] for m in everything["models"]] == [
        "llama3.2:latest", "qwen3:latest", "gpt-4o", "claude-sonnet-4-5", "big"]  # fmt: skip


def test_an_alias_through_the_sdks_is_served_from_its_targets_cache(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    one, other = _replicas(start_service)
    key = made(redis_url, "agent")
    question = unique("an alias asks")
    with openai.OpenAI(base_url=one.url + "/v1", api_key=key, max_retries=0) as sdk:
        target = sdk.chat.completions.with_raw_response.create(
            model="llama3.2", messages=[{"role": "user", "content": question}])  # fmt: skip
    with openai.OpenAI(base_url=other.url + "/v1", api_key=key, max_retries=0) as sdk:
        alias = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": question}])  # fmt: skip
        streamed = list(sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": question}],
            stream=True))  # fmt: skip
    assert target.headers["x-cache"] == "MISS"
    assert alias.headers["x-cache"] == "HIT"  # the other replica, the target's entry
    assert alias.parse().model == "gpt-4o"
    assert alias.parse().choices[0].message.content == target.parse().choices[0].message.content
    assert {chunk.model for chunk in streamed} == {"gpt-4o"}
    with anthropic.Anthropic(base_url=one.url, api_key=key, max_retries=0) as claude:
        asked: list[MessageParam] = [{"role": "user", "content": unique("claude code asks")}]
        first = claude.messages.with_raw_response.create(model="llama3.2", max_tokens=64,
                                                         messages=asked)  # fmt: skip
        again = claude.messages.with_raw_response.create(model="claude-sonnet-4-5",
                                                         max_tokens=64, messages=asked)  # fmt: skip
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert again.parse().model == "claude-sonnet-4-5"
    assert again.parse().content == first.parse().content


def test_a_keys_own_alias_goes_over_the_services(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    one, _ = _replicas(start_service)
    key = made(redis_url, "coder", "--aliases", "gpt-4o=qwen3")
    answer = httpx.post(one.url + "/v1/chat/completions", headers={"X-API-Key": key}, timeout=20,
                        json={"model": "gpt-4o", "messages": [
                            {"role": "user", "content": unique("whose alias")}]})  # fmt: skip
    assert answer.status_code == 200
    assert answer.json()["model"] == "gpt-4o"
    health = httpx.get(one.url + "/v1/health").json()  # the service's own aliases, marked
    assert health["aliases"]["gpt-4o"] == "llama3.2:latest"
    thinking = httpx.post(one.url + "/api/chat", headers={"X-API-Key": key}, timeout=20, json={
        "model": "gpt-4o", "think": True, "stream": False,
        "messages": [{"role": "user", "content": unique("think")}]})  # fmt: skip
    assert thinking.status_code == 200  # qwen3 thinks; llama3.2 would have refused think
    assert thinking.json()["message"]["thinking"]


def test_a_change_and_an_expiry_reach_both_replicas_within_a_second(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    one, other = _replicas(start_service)
    key = made(redis_url, "temp", "--expires", "6s", "--note", "for the demo")
    headers = {"X-API-Key": key}
    for server in (one, other):
        assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 200
    assert keys(redis_url, "update", "temp", "--models", "qwen3").returncode == 0
    changed = time.monotonic()
    while "qwen3:latest" not in _ids(other, headers):
        assert time.monotonic() - changed < 1.0, "the change is not served after a second"
        time.sleep(0.05)
    assert _ids(one, headers) == ["qwen3:latest", "big"]
    listed = keys(redis_url, "list").stdout
    line = next(line for line in listed.splitlines() if line.startswith("temp\t"))
    assert "\tqwen3\t" in line
    assert line.endswith("\tfor the demo")
    assert "used 20" in line  # when a replica last read it
    assert key not in listed
    while any(httpx.get(s.url + "/v1/models", headers=headers).status_code == 200
              for s in (one, other)):  # fmt: skip
        time.sleep(0.05)
    expired = httpx.get(one.url + "/v1/models", headers=headers)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
    assert httpx.get(other.url + "/v1/models", headers=headers).status_code == 401
    assert "expires 20" in keys(redis_url, "list").stdout  # still listed, as expired


def _ids(server: Server, headers: dict[str, str]) -> list[str]:
    return [m["id"] for m in httpx.get(server.url + "/v1/models", headers=headers).json()["data"]]
