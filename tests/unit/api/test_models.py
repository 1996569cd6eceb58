"""Which models a client may use, and by which names (``app.access.models``), in-process, on
every surface: an allow-list's refusal in each surface's error shape, counted against nothing;
an alias served by its target, its answers naming the alias, sharing the target's cache; the
model lists as the client may use them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from app.access.models import Models
from app.settings import Settings
from tests.support.in_process import InProcess, in_process

pytestmark = pytest.mark.anyio

Check = Callable[[dict[str, Any]], bool]
NATIVE: Check = lambda b: b["error"] == "model_not_allowed" and b["status"] == 403  # noqa: E731
OPENAI: Check = lambda b: (b["error"]["code"], b["error"]["type"], b["error"]["param"]) == (  # noqa: E731
    "model_not_allowed", "invalid_request_error", "model")  # fmt: skip
ANTHROPIC: Check = lambda b: b["type"] == "error" and b["error"]["type"] == "permission_error"  # noqa: E731
OLLAMA: Check = lambda b: "not allowed" in b["error"]  # noqa: E731
CHAT = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def app(app_env: dict[str, str]) -> AsyncIterator[InProcess]:
    """Anonymous clients may use llama3.2 only; three aliases, one of them of qwen3."""
    aliases = "gpt-4o=llama3.2, claude-sonnet-4-5=qwen3,embedder=llama3.2"
    env = {**app_env, "ANONYMOUS_MODELS": "llama3.2", "MODEL_ALIASES": aliases}
    async with in_process(env) as running:
        yield running


def test_a_view_resolves_aliases_and_matches_patterns() -> None:
    view = Models({"gpt-4o:latest": "llama3.2", "big:latest": "qwen3:70b"},
                  ("llama3.2", "qwen3:*"))  # fmt: skip
    assert view.target("gpt-4o") == view.target("gpt-4o:latest") == "llama3.2"
    assert view.target("llama3.2") == "llama3.2"
    allowed = ["llama3.2", "llama3.2:latest", "qwen3:8b", "qwen3:70b",
               "qwen3"]  # qwen3:latest, one of qwen3's tags  # fmt: skip
    assert [name for name in allowed if not view.allows(name)] == []
    refused = ["llama3.2:70b", "mistral", "qwen2:7b"]  # no tag is :latest, not any tag
    assert [name for name in refused if view.allows(name)] == []
    shadowed = Models({"qwen3:latest": "llama3.2"}, ())
    assert shadowed.listed(["llama3.2:latest", "qwen3:latest"]) == [
        ("llama3.2:latest", None), ("qwen3", "llama3.2:latest")]  # fmt: skip
    assert Models({}, ("qwen3*",)).allows("qwen3")
    assert Models({}, ()).allows("anything")
    assert view.listed(["llama3.2:latest", "qwen3:70b", "mistral:latest"]) == [
        ("llama3.2:latest", None), ("qwen3:70b", None),
        ("gpt-4o", "llama3.2:latest"), ("big", "qwen3:70b"),
    ]  # fmt: skip


def test_the_settings_read_aliases_and_patterns() -> None:
    read = Settings.from_environ({"MODEL_ALIASES": "gpt-4o=llama3.2, a = b:7b,",
                                  "ANONYMOUS_MODELS": "llama3.2, qwen3:*"})  # fmt: skip
    assert read.model_aliases == (("gpt-4o", "llama3.2"), ("a", "b:7b"))
    assert read.anonymous_models == ("llama3.2", "qwen3:*")
    for variable, wrong in (("MODEL_ALIASES", "gpt-4o"), ("MODEL_ALIASES", "=x"),
                            ("MODEL_ALIASES", "a=b c"), ("ANONYMOUS_MODELS", "a b")):  # fmt: skip
        with pytest.raises(ValueError, match=variable):
            Settings.from_environ({variable: wrong})


@pytest.mark.parametrize(
    ("path", "body", "shaped"),
    [
        pytest.param("/v1/chats/generate", {"prompt": "p", "stream": False}, NATIVE, id="native"),
        pytest.param("/v1/chats/generations", {"prompt": "p"}, NATIVE, id="native-resource"),
        pytest.param("/v1/chat/completions", {"messages": CHAT}, OPENAI, id="openai-chat"),
        pytest.param("/v1/completions", {"prompt": "p"}, OPENAI, id="openai-text"),
        pytest.param("/v1/embeddings", {"input": "p"}, OPENAI, id="openai-embeddings"),
        pytest.param("/v1/responses", {"input": "p"}, OPENAI, id="responses"),
        pytest.param("/v1/messages", {"max_tokens": 9, "messages": CHAT}, ANTHROPIC,
                     id="anthropic"),
        pytest.param("/v1/messages/count_tokens", {"messages": CHAT}, ANTHROPIC,
                     id="anthropic-count"),
        pytest.param("/api/generate", {"prompt": "p", "stream": False}, OLLAMA,
                     id="ollama-generate"),
        pytest.param("/api/chat", {"messages": CHAT, "stream": False}, OLLAMA, id="ollama-chat"),
        pytest.param("/api/embed", {"input": "p"}, OLLAMA, id="ollama-embed"),
        pytest.param("/api/show", {}, OLLAMA, id="ollama-show"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("model", ["qwen3", "qwen3:latest", "claude-sonnet-4-5"])
async def test_a_model_not_allowed_is_403_in_each_shape_and_counts_nothing(
    app: InProcess, path: str, body: dict[str, Any], shaped: Check, model: str
) -> None:
    async with app.client() as http:
        refused = await http.post(path, json={**body, "model": model})
        allowed = await http.post(path, json={**body, "model": "llama3.2"})
    assert refused.status_code == 403, refused.text
    assert shaped(refused.json())
    assert "ratelimit" not in refused.headers  # not counted: it owes no quota anything
    assert allowed.status_code in (200, 202), allowed.text
    generates = path not in ("/v1/messages/count_tokens", "/api/show")
    assert ("ratelimit" in allowed.headers) is generates  # the counted ones are


async def test_a_query_string_is_checked_too(app: InProcess) -> None:
    async with app.client() as http:
        refused = await http.get("/v1/chats/generate", params={"model": "qwen3", "prompt": "q"})
    assert refused.status_code == 403
    assert NATIVE(refused.json())


async def test_the_default_model_is_checked_too(app_env: dict[str, str]) -> None:
    env = {**app_env, "ANONYMOUS_MODELS": "qwen3"}  # DEFAULT_MODEL is llama3.2
    async with in_process(env) as running, running.client() as http:
        refused = await http.post("/v1/chat/completions", json={"messages": CHAT})
    assert refused.status_code == 403


def _said_model(path: str, answer: bytes) -> set[str]:
    """Every ``model`` an answer names, JSON or a stream of JSON lines or events."""
    said: set[str] = set()
    for line in answer.splitlines():
        text = line.removeprefix(b"data: ")
        if text.startswith(b"{"):
            found = orjson.loads(text)
            for where in (found, found.get("message") or {}, found.get("response") or {}):
                if isinstance(where, dict) and "model" in where:
                    said.add(where["model"])
    return said


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/chats/generate", {"prompt": "a"}, id="native"),
        pytest.param("/v1/chat/completions", {"messages": CHAT}, id="openai-chat"),
        pytest.param("/v1/responses", {"input": "a"}, id="responses"),
        pytest.param("/v1/messages", {"max_tokens": 9, "messages": CHAT}, id="anthropic"),
        pytest.param("/api/chat", {"messages": CHAT}, id="ollama-chat"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_an_alias_is_served_by_its_target_from_its_cache_under_its_own_name(
    app: InProcess, path: str, body: dict[str, Any], stream: bool
) -> None:
    async with app.client() as http:
        target = await http.post(path, json={**body, "model": "llama3.2", "stream": stream})
        alias = await http.post(path, json={**body, "model": "gpt-4o", "stream": stream})
    assert target.status_code == alias.status_code == 200
    assert alias.headers["x-cache"] == "HIT"  # the target's entry: paid once
    assert _said_model(path, alias.content) == {"gpt-4o"}
    assert "gpt-4o" not in _said_model(path, target.content)
    assert (await app.simulator_counters())["started"] == 1


async def test_an_embedding_alias_shares_its_targets_entry(app: InProcess) -> None:
    async with app.client() as http:
        target = await http.post("/v1/embeddings", json={"model": "llama3.2", "input": "e"})
        alias = await http.post("/v1/embeddings", json={"model": "embedder", "input": "e"})
        ollama = await http.post("/api/embed", json={"model": "embedder", "input": "e"})
    assert alias.headers["x-cache"] == ollama.headers["x-cache"] == "HIT"
    assert alias.json()["model"] == ollama.json()["model"] == "embedder"
    assert target.json()["model"] == "llama3.2"
    assert target.json()["data"] == alias.json()["data"]


async def test_the_lists_show_what_the_client_may_use_and_its_aliases(app: InProcess) -> None:
    async with app.client() as http:
        models = (await http.get("/v1/models")).json()
        tags = (await http.get("/api/tags")).json()
        health = (await http.get("/v1/health")).json()
    names = ["llama3.2:latest", "gpt-4o", "embedder"]
    assert [m["id"] for m in models["data"]] == names
    assert [m["name"] for m in models["models"]] == [m["name"] for m in tags["models"]] == names
    assert tags["models"][1]["digest"] == tags["models"][0]["digest"]  # the target's entry
    # the Anthropic SDK's fields, at the same path
    assert (models["has_more"], models["first_id"], models["last_id"]) == (
        False, "llama3.2:latest", "embedder")  # fmt: skip
    assert models["data"][1]["type"] == "model"
    assert models["data"][1]["created_at"] == "2026-11-01T10:00:00Z"
    # the service's own view: every model, and its aliases marked so
    assert health["available_models"] == [
        "llama3.2:latest", "qwen3:latest", "gpt-4o", "claude-sonnet-4-5", "embedder"]  # fmt: skip
    assert health["aliases"] == {"gpt-4o": "llama3.2:latest", "claude-sonnet-4-5": "qwen3:latest",
                                 "embedder": "llama3.2:latest"}  # fmt: skip
