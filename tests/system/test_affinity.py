"""Conversation affinity over real sockets: two simulator hosts that each keep a prompt cache
(``--prefill-delay``), the app under uvicorn, one real Valkey. A conversation's turns go to the
host that served the last one, whichever replica is asked; a busy warm host spills; a session
key pins; an ejected host loses its entries; with Redis down, least busy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from harness import servers
from harness.servers import Server, sample, simulator_counters
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.system]
PREFILL = "0.0002"  # seconds a prompt token past the cached prefix: 0.3 s for 1,500 words


@pytest.fixture
def two_hosts() -> Iterator[list[Server]]:
    hosts = [servers.simulator("--tokens", "8", "--token-delay", "0.005", "--prefill-delay",
                               PREFILL).start() for _ in range(2)]  # fmt: skip
    yield hosts
    for host in hosts:
        host.stop()


def system_prompt() -> str:
    """About 1,500 words, unique to the test: no other test's entries match it."""
    return f"Conversation {uuid.uuid4().hex}. " + "Answer as a careful reviewer would. " * 250


async def ask(service: Server, messages: list[dict[str, Any]], *, slow: bool = False,
              headers: dict[str, str] | None = None) -> tuple[str, str]:  # fmt: skip
    """One turn, through Ollama's chat: the host that served it and the answer."""
    body: dict[str, Any] = {"model": "llama3.2", "messages": messages, "stream": False}
    if slow:
        body["options"] = {"sim_tokens": 40, "sim_token_delay": 0.1}
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        response = await http.post("/api/chat", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.headers["x-upstream-host"], response.json()["message"]["content"]


async def converse(replicas: list[Server], turns: int, system: str) -> list[str]:
    """A conversation of ``turns`` turns, asked of each replica in turn: the hosts serving it."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    served = []
    for n in range(turns):
        messages.append({"role": "user", "content": f"Question {n}: what about part {n}?"})
        host, answer = await ask(replicas[n % len(replicas)], messages)
        messages.append({"role": "assistant", "content": answer})
        served.append(host)
    return served


def affinity(service: Server, result: str, host: Server) -> float:
    text = httpx.get(service.url + "/metrics").text
    return sample(text, "bib_affinity_total", host=host.url, result=result)


async def test_a_conversation_stays_on_its_host_whichever_replica_is_asked(
    start_service: Callable[..., Server], two_hosts: list[Server]
) -> None:
    urls = ",".join(h.url for h in two_hosts)
    replicas = [start_service(OLLAMA_HOSTS=urls) for _ in range(2)]
    served = await converse(replicas, 5, system_prompt())
    assert len(set(served)) == 1, served
    warm, cold = sorted(two_hosts, key=lambda h: h.url != served[0])
    assert simulator_counters(cold)["prompt_tokens"] == 0  # it never read this prompt
    counted = simulator_counters(warm)
    assert counted["prompt_tokens_cached"] > 0.8 * counted["prompt_tokens"] * 4 / 5
    assert sum(affinity(r, "hit", warm) for r in replicas) == 4  # turns 2-5
    assert sum(affinity(r, "miss", warm) for r in replicas) == 1


async def test_without_affinity_the_cache_is_read_only_by_chance(
    start_service: Callable[..., Server], two_hosts: list[Server]
) -> None:
    """``AFFINITY_TTL=0``: nothing is looked up or counted; the turns go least busy."""
    service = start_service(OLLAMA_HOSTS=",".join(h.url for h in two_hosts), AFFINITY_TTL="0")
    await converse([service], 3, system_prompt())
    for host in two_hosts:
        assert affinity(service, "miss", host) == affinity(service, "hit", host) == 0


async def test_a_warm_host_markedly_busier_than_another_spills(
    start_service: Callable[..., Server], two_hosts: list[Server]
) -> None:
    """``AFFINITY_SPILL=1``: the warm host running two generations (sent there by their shared
    prefix) and the other none, the conversation's next turn goes to the idle one."""
    service = start_service(OLLAMA_HOSTS=",".join(h.url for h in two_hosts), AFFINITY_SPILL="1")
    system = system_prompt()
    first = (await converse([service], 1, system))[0]
    warm, cold = sorted(two_hosts, key=lambda h: h.url != first)
    busy = [asyncio.create_task(ask(service, [{"role": "system", "content": system},
                                              {"role": "user", "content": f"Long job {n}"}],
                                    slow=True)) for n in range(2)]  # fmt: skip
    await wait_for(lambda: servers.in_flight(simulator_counters(warm)) == 2, 10)
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": "Another question"}]  # fmt: skip
    host, _ = await ask(service, messages)
    assert host == cold.url
    assert affinity(service, "spill", warm) == 1
    assert {host for host, _ in await asyncio.gather(*busy)} == {warm.url}


async def test_a_session_key_pins_a_conversation(
    start_service: Callable[..., Server], two_hosts: list[Server]
) -> None:
    """Short, unrelated prompts (no chunk to index) under one ``X-Session-ID`` go where the
    first went; so do Claude Code's and Codex's own headers."""
    service = start_service(OLLAMA_HOSTS=",".join(h.url for h in two_hosts))
    for header in ("X-Session-ID", "X-Claude-Code-Session-Id", "session_id"):
        session = {header: uuid.uuid4().hex}
        served = [(await ask(service, [{"role": "user", "content": f"Short {n} {uuid.uuid4()}"}],
                             headers=session))[0] for n in range(6)]  # fmt: skip
        assert len(set(served)) == 1, (header, served)


async def test_an_ejected_host_loses_its_entries(
    start_service: Callable[..., Server], two_hosts: list[Server]
) -> None:
    """The conversation's host goes down and comes back (its engine restarted, its cache
    empty): the next turn is a miss, not a hit on a cold host."""
    service = start_service(OLLAMA_HOSTS=",".join(h.url for h in two_hosts),
                            OLLAMA_REFRESH_INTERVAL="0.2", OLLAMA_EJECT_SECONDS="0.2",
                            OLLAMA_EJECT_MAX_SECONDS="0.2")  # fmt: skip
    system = system_prompt()
    first = (await converse([service], 1, system))[0]
    warm = next(h for h in two_hosts if h.url == first)
    warm.stop()
    await wait_for(lambda: states(service).get(warm.url) == "ejected", 10)
    warm.start()
    await wait_for(lambda: states(service).get(warm.url) == "serving", 10)
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": "Another question"}]  # fmt: skip
    misses = sum(affinity(service, "miss", h) for h in two_hosts)
    await ask(service, messages)
    assert sum(affinity(service, "miss", h) for h in two_hosts) == misses + 1
    assert affinity(service, "hit", warm) == 0


def states(service: Server) -> dict[str, str]:
    hosts = httpx.get(service.url + "/v1/health", timeout=5).json()["ollama_hosts"]
    return {h["url"]: h["state"] for h in hosts}


async def test_with_redis_down_turns_go_to_the_least_busy_host(
    start_service: Callable[..., Server], two_hosts: list[Server]
) -> None:
    own = servers.valkey().start(ready_path=None)
    try:
        service = start_service(OLLAMA_HOSTS=",".join(h.url for h in two_hosts),
                                REDIS_URL=f"redis://127.0.0.1:{own.port}/0")  # fmt: skip
        await converse([service], 1, system_prompt())
    finally:
        own.stop()
    served = await converse([service], 3, system_prompt())
    assert set(served) <= {h.url for h in two_hosts}
