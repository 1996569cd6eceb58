"""``GET /v1/usage`` in-process: a key reads its own use, which equals what the simulator counted
and counts cache hits apart; a request without a key is ``401``, a window that cannot be ``422``
naming its field. Over real sockets and two replicas: ``tests/system/test_usage.py``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest

from app.access import api_keys
from app.store.client import RedisClient
from tests.support import sse
from tests.support.bodies import GENERATE, unique
from tests.support.in_process import InProcess, in_process

pytestmark = pytest.mark.anyio

RETENTION_DAYS = 30
COUNTERS = ("requests", "input_tokens", "output_tokens", "cache_hits", "refused")


@pytest.fixture
async def keyed(app_env: dict[str, str]) -> AsyncIterator[InProcess]:
    env = {**app_env, "AUTH": "optional", "USAGE_RETENTION_DAYS": str(RETENTION_DAYS)}
    async with in_process(env) as app:
        yield app


async def made(redis: RedisClient, name: str, **limits: int) -> dict[str, str]:
    """The headers of a new key named ``name``."""
    key = await api_keys.create(redis, name, limits)
    assert key is not None
    return {"Authorization": f"Bearer {key}"}


def counts(**given: int) -> dict[str, int]:
    return {name: given.get(name, 0) for name in COUNTERS}


async def usage_once(http: httpx.AsyncClient, totals: dict[str, int]) -> dict[str, Any]:
    """The key's usage once its totals are ``totals``: a request's counts are summed in the
    worker and sent within ``usage.FLUSH_SECONDS`` of its answer."""
    deadline = time.monotonic() + 3
    while True:
        answer = await http.get("/v1/usage")
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        body: dict[str, Any] = answer.json()
        if body["totals"] == totals or time.monotonic() > deadline:
            return body


async def test_a_key_reads_what_it_used(keyed: InProcess, redis: RedisClient) -> None:
    """A miss, a hit, a stream of another model, an embedding and its hit, then refusals: the
    tokens are the engine's (the simulator's counters), hits add none, each model apart."""
    alice = await made(redis, "alice", rate_limit_max=5)
    asked = {"prompt": unique("usage"), "stream": False}
    embedded = {"model": "llama3.2", "input": "one two three"}
    async with keyed.client(**alice) as http:
        miss = await http.post(GENERATE, json=asked)
        hit = await http.post(GENERATE, json=asked)
        streamed = await sse.fetch(http, "POST", GENERATE,
                                   json={"prompt": unique("usage"), "model": "qwen3"})  # fmt: skip
        embeddings = [await http.post("/api/embed", json=embedded) for _ in range(2)]
        assert [r.headers["x-cache"] for r in (miss, hit, *embeddings)] == [
            "MISS", "HIT", "MISS", "HIT"]  # fmt: skip
        hits = 0  # within the limit until the window says otherwise, each a hit
        while (last := await http.post(GENERATE, json=asked)).status_code == 200:
            hits += 1
            assert hits < 5
        assert last.status_code == 429
        simulated = await keyed.simulator_counters()
        used = await usage_once(http, counts(requests=5 + hits, input_tokens=26 + 26 + 3,
                                             output_tokens=simulated["output_tokens"],
                                             cache_hits=2 + hits, refused=1))  # fmt: skip
    assert simulated["input_tokens"] == 26 + 26 + 3  # two generations, three words embedded
    assert simulated["output_tokens"] == miss.json()["eval_count"] + (
        streamed.events()[-1].json()["eval_count"])  # fmt: skip
    today = datetime.now(UTC).date()
    window = [(today - timedelta(days=n)).isoformat() for n in range(6, -1, -1)]
    assert used == {
        "key": "alice",
        "start": window[0],
        "end": window[-1],
        "totals": used["totals"],  # waited for above
        "by_model": {
            "llama3.2": counts(requests=4 + hits, input_tokens=26 + 3,
                               output_tokens=miss.json()["eval_count"], cache_hits=2 + hits,
                               refused=1),
            "qwen3": counts(requests=1, input_tokens=26,
                            output_tokens=streamed.events()[-1].json()["eval_count"]),
        },
        "by_day": {**{day: counts() for day in window[:-1]}, window[-1]: used["totals"]},
    }  # fmt: skip
    bob = await made(redis, "bob")
    async with keyed.client(**bob) as http:
        assert (await http.post(GENERATE, json=asked)).status_code == 200
        assert (await usage_once(http, counts(requests=1, cache_hits=1)))["totals"] == counts(
            requests=1, cache_hits=1)  # fmt: skip
    async with keyed.client() as http:  # no key: answered, recorded nowhere
        assert (await http.post(GENERATE, json={"prompt": unique("anonymous")})).status_code == 200
    names = cast(list[bytes], await redis.keys("bib:usage:*"))  # no decode_responses: bytes
    assert {name.split(b"}")[0] for name in names} == {b"bib:usage:{key:alice",
                                                        b"bib:usage:{key:bob"}  # fmt: skip


async def test_a_resumed_stream_is_not_a_new_request(keyed: InProcess,
                                                     redis: RedisClient) -> None:  # fmt: skip
    """A reconnect continues a request already counted; an events URL is not a request."""
    alice = await made(redis, "alice")
    body = {"prompt": unique("resumed")}
    async with keyed.client(**alice) as http:
        first = await sse.fetch(http, "POST", GENERATE, json=body)
        generation = first.events()[0].json()["generation"]
        resumed = await sse.fetch(http, "POST", GENERATE, json=body,
                                  headers={"Last-Event-ID": f"{generation}.3"})  # fmt: skip
        assert resumed.events()[0].last_event_id == f"{generation}.4"
        events = await sse.fetch(http, "GET", f"/v1/chats/generations/{generation}/events")
        assert events.events()[-1].type == "done"
        stats = first.events()[-1].json()
        expected = counts(requests=1, input_tokens=stats["prompt_eval_count"],
                          output_tokens=stats["eval_count"])  # fmt: skip
        assert (await usage_once(http, expected))["totals"] == expected


async def test_without_a_key_it_is_401(keyed: InProcess, app: InProcess) -> None:
    """Usage is per key: anonymous clients have none, and with AUTH off no key is read."""
    for running in (keyed, app):
        async with running.client() as http:
            refused = await http.get("/v1/usage")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["error"] == "unauthorized"


def _days(offset: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=offset)).isoformat()


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        pytest.param({"start": "yesterday"}, {"start": "must be a date, YYYY-MM-DD"},
                     id="not-a-date"),
        pytest.param({"start": _days(-RETENTION_DAYS)},
                     {"start": f"must not be before {_days(1 - RETENTION_DAYS)}: usage is kept "
                               f"{RETENTION_DAYS} days"}, id="beyond-the-retention"),
        pytest.param({"end": _days(1)},
                     {"end": f"must not be after today, {_days(0)} (UTC)"}, id="after-today"),
        pytest.param({"start": _days(0), "end": _days(-1)}, {"start": "must not be after end"},
                     id="backwards"),
    ],
)  # fmt: skip
async def test_a_window_that_cannot_be_is_422_naming_the_field(
    keyed: InProcess, redis: RedisClient, query: dict[str, str], fields: dict[str, str]
) -> None:
    async with keyed.client(**await made(redis, "carol")) as http:
        refused = await http.get("/v1/usage", params=query)
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["error"] == "invalid_request"
    assert refused.json()["fields"] == fields
