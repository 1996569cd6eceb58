"""Shared fixtures: a real Valkey, the Ollama simulator, and the app under uvicorn or in-process.

A test that uses Redis runs on one Valkey; where Redis semantics are under test (the store, the
limiter, joining, resume, hosts), its module is marked ``cluster`` and it runs on a three-node
Valkey cluster too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from app.store.client import RedisClient, connect
from app.store.generations import RedisStore
from harness import servers
from tests import helpers
from tests.helpers import SERVICE_ENV


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client runs on asyncio only


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" in metafunc.fixturenames:
        cluster = metafunc.definition.get_closest_marker("cluster") is not None
        flavours = ["single", "cluster"] if cluster else ["single"]
        metafunc.parametrize("redis_url", flavours, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """One Valkey, or a three-node Valkey cluster (see the module docstring)."""
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
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of the suite's Redis, as a worker connects one."""
    client = await connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    """The service's Redis store on the suite's Redis, as a worker builds it."""
    quick, blocking = await connect(redis_url), await connect(redis_url)
    yield RedisStore(quick, blocking)
    await quick.aclose()
    await blocking.aclose()


@pytest.fixture
def app_env(redis_url: str) -> dict[str, str]:
    """The suite's settings for an in-process app (``helpers.in_process``)."""
    return {**SERVICE_ENV, "REDIS_URL": redis_url}


@pytest.fixture
async def app(app_env: dict[str, str]) -> AsyncIterator[helpers.InProcess]:
    """The app in-process with the suite's settings."""
    async with helpers.in_process(app_env) as running:
        yield running


@pytest.fixture
async def client(service: servers.Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=20) as http:
        yield http
