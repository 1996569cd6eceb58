"""Embeddings: requests of every surface as one ``EmbeddingRequest``, answered by Ollama and cached.

``/api/embed`` (Ollama) and ``/v1/embeddings`` (OpenAI) are both Ollama's ``/api/embed`` upstream,
so the same input asked through either is one cache entry; the legacy ``/api/embeddings``
(one ``prompt``, vectors not normalised) is Ollama's own legacy endpoint, cached apart. The key
is the sha256 of everything that changes the vectors: the endpoint, model, input (a string is
a list of one), ``truncate``, ``dimensions`` and ``options``; ``keep_alive`` is not part of it.
Entries are Ollama's answer as it came, for ``CACHE_TTL`` (0: no caching), unless larger than
``CACHE_MAX_BYTES``. Redis down: answered uncached.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.errors import InvalidRequest
from app.generations.feeds import XCache
from app.generations.generation import Account
from app.generations.request import check_model
from app.store.client import RedisUnavailable
from app.store.generations import RedisStore
from app.upstream.hosts import Hosts

Upstream = Literal["/api/embed", "/api/embeddings"]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """What Ollama is asked; ``upstream`` is its endpoint."""

    upstream: Upstream
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body["model"])

    def key(self) -> str:
        content = {k: v for k, v in self.body.items() if k != "keep_alive"}
        content["upstream"] = self.upstream
        return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def embed_request(data: dict[str, Any], default_model: str) -> EmbeddingRequest:
    """An ``/api/embed`` body (``model``, ``input``, ``truncate``, ``dimensions``,
    ``options``, ``keep_alive``), checked; ``input`` becomes a list."""
    problems: dict[str, str] = {}
    body: dict[str, Any] = {"model": data.get("model", default_model)}
    model_problem = check_model(body["model"])
    if model_problem:
        problems["model"] = model_problem
    given = data.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        problems["input"] = "must be a string or a non-empty list of strings"
    body["input"] = inputs
    checks: dict[str, type | tuple[type, ...]] = {
        "truncate": bool, "dimensions": int, "options": dict, "keep_alive": (str, int)
    }  # fmt: skip
    for name, kind in checks.items():
        if data.get(name) is None:
            continue
        if not isinstance(data[name], kind) or (kind is int and isinstance(data[name], bool)):
            problems[name] = "has the wrong type"
        body[name] = data[name]
    unknown = set(data) - {"model", "input", *checks}
    problems.update(dict.fromkeys(sorted(unknown), "is not a known field"))
    if problems:
        raise InvalidRequest.listing(problems)
    return EmbeddingRequest("/api/embed", body)


def legacy_request(data: dict[str, Any], default_model: str) -> EmbeddingRequest:
    """An ``/api/embeddings`` body: ``model``, ``prompt``, ``options``, ``keep_alive``."""
    if not isinstance(data.get("prompt"), str):
        raise InvalidRequest("prompt must be a string.", {"prompt": "must be a string"})
    checked = embed_request({**{k: v for k, v in data.items() if k != "prompt"},
                             "input": data["prompt"]}, default_model)  # fmt: skip
    body = {k: v for k, v in checked.body.items() if k != "input"}
    return EmbeddingRequest("/api/embeddings", {**body, "prompt": data["prompt"]})


class Embedder:
    """Answers embeddings from the cache, else from an Ollama host that has the model."""

    def __init__(self, hosts: Hosts, store: RedisStore, *, ttl_seconds: int,
                 max_bytes: int) -> None:  # fmt: skip
        self._hosts = hosts
        self._store = store
        self._ttl_seconds = ttl_seconds
        self._max_bytes = max_bytes

    async def embed(self, request: EmbeddingRequest, account: Account | None = None
                    ) -> tuple[dict[str, Any], XCache]:  # fmt: skip
        """Ollama's answer, and whether it came from the cache (``HIT``) or not (``MISS``);
        what Ollama counted (``prompt_eval_count``) is charged to ``account``, a hit is free."""
        key = request.key() if self._ttl_seconds > 0 else None
        if key is not None:
            try:
                found = await self._store.embedding(key)
            except RedisUnavailable:
                key = None  # no cache this time, in either direction
            else:
                if found is not None:
                    answer: dict[str, Any] = orjson.loads(found)
                    return answer, "HIT"
        answer = await self._hosts.embed(request.model, request.upstream, request.body)
        if account is not None:
            with contextlib.suppress(RedisUnavailable):  # lost with Redis, like every charge
                await account.settle(int(answer.get("prompt_eval_count") or 0))
        entry = orjson.dumps(answer)
        if key is not None and len(entry) <= self._max_bytes:
            with contextlib.suppress(RedisUnavailable):  # answered all the same
                await self._store.save_embedding(key, entry, self._ttl_seconds)
        return answer, "MISS" if key is not None else "BYPASS"
