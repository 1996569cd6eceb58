"""Fixtures of the system tree: the Ollama simulator and the app, real processes on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import httpx2
import openai
import pytest

from harness import servers
from tests.support.sdks import SDK
from tests.support.settings import SERVICE_ENV


@pytest.fixture(scope="session")
def simulator() -> Iterator[servers.Server]:
    """The simulator: 12 tokens, 10 ms apart, unless a request's options say otherwise."""
    server = servers.simulator("--tokens", "12", "--token-delay", "0.01").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_env(redis_url: str, simulator: servers.Server) -> dict[str, str]:
    return {**SERVICE_ENV, "REDIS_URL": redis_url, "OLLAMA_HOST": simulator.url}


@pytest.fixture(scope="session")
def service(service_env: dict[str, str]) -> Iterator[servers.Server]:
    server = servers.app(service_env).start("/livez")
    yield server
    server.stop()


@pytest.fixture
def start_service(service_env: dict[str, str]) -> Iterator[Callable[..., servers.Server]]:
    """Starts an app with settings on top of the suite's; stopped after the test."""
    started: list[servers.Server] = []

    def start(*, measured: bool = True, **env: str) -> servers.Server:
        server = servers.app({**service_env, **env}).start("/livez", measured=measured)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def client(service: servers.Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=20) as http:
        yield http


@pytest.fixture
def sdk() -> Iterator[SDK]:
    """Makes ``openai`` SDK clients of a server (through ``transport`` if given), closed after
    the test."""
    made: list[openai.OpenAI] = []

    def make(server: servers.Server, transport: httpx2.BaseTransport | None = None
             ) -> openai.OpenAI:  # fmt: skip
        http = httpx2.Client(transport=transport or httpx2.HTTPTransport(), timeout=20)
        made.append(openai.OpenAI(base_url=server.url + "/v1", api_key="anything",
                                  http_client=http, max_retries=0))  # fmt: skip
        return made[-1]

    yield make
    for client in made:
        client.close()
