"""Shared fixtures: a real Valkey, the Ollama simulator, and the app under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from tests import servers

# Small numbers keep the suite fast; tests that need others start their own app.
SERVICE_ENV = {
    "HEARTBEAT_INTERVAL": "1",
    "UPSTREAM_TIMEOUT": "5",
    "UPSTREAM_IDLE_TIMEOUT": "2",
    "RESUME_GRACE": "0",
    "RATE_LIMIT_MAX": "1000000",  # on, so every test passes through it, but out of the way
    "SHUTDOWN_GRACE": "2",
    "LOG_LEVEL": "warning",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client runs on asyncio only


@pytest.fixture(scope="session", params=["single", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test that uses Redis runs twice: on one Valkey, and on a three-node Valkey cluster."""
    if request.param == "single":
        server = servers.valkey().start(ready_path=None)
        yield f"redis://127.0.0.1:{server.port}/0"
        server.stop()
    else:
        cluster = servers.ValkeyCluster().start()
        yield cluster.url
        cluster.stop()


@pytest.fixture(autouse=True)
def _flush_redis(request: pytest.FixtureRequest) -> None:
    """Each test that uses Redis starts from an empty one: no entries or counts of earlier tests."""
    if "redis_url" in request.fixturenames:
        with servers.redis_client(request.getfixturevalue("redis_url")) as client:
            client.flushall()


@pytest.fixture(scope="session")
def ollama() -> Iterator[servers.Server]:
    """The simulator: 12 tokens, 10 ms apart, unless a request's options say otherwise."""
    server = servers.simulator("--tokens", "12", "--token-delay", "0.01").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_env(redis_url: str, ollama: servers.Server) -> dict[str, str]:
    return {**SERVICE_ENV, "REDIS_URL": redis_url, "OLLAMA_HOST": ollama.url}


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
