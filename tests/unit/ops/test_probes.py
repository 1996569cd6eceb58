"""Health probes and the model list, in-process (``tests.support.in_process``): Redis is a real
Valkey, or a port where nothing listens; Ollama the simulator, or a port where nothing listens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from harness.servers import free_port
from tests.support.in_process import InProcess, in_process

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(app: InProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with app.client() as http:
        yield http


async def test_probes_pass_when_dependencies_answer(client: httpx.AsyncClient) -> None:
    live = await client.get("/livez")
    assert (live.status_code, live.json()) == (200, {"status": "pass"})
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.headers["content-type"] == "application/health+json"
    assert ready.headers["cache-control"] == "no-store"
    assert ready.json()["status"] == "pass"
    health = (await client.get("/v1/health")).json()
    assert health["status"] == "healthy"
    assert (health["ollama"], health["redis"]) == ("connected", "connected")
    assert "llama3.2:latest" in health["available_models"]
    assert health["version"]
    assert health["uptime_seconds"] >= 0


async def test_models_come_from_ollama(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()["models"]
    assert [m["name"] for m in models] == ["llama3.2:latest", "qwen3:latest"]


async def test_redis_down_fails_readiness_but_not_liveness(app_env: dict[str, str]) -> None:
    env = {**app_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    async with in_process(env) as app, app.client() as http:
        assert (await http.get("/livez")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "fail"
        assert body["checks"]["redis:responseTime"][0]["status"] == "fail"
        assert body["checks"]["ollama:responseTime"][0]["status"] == "pass"
        health = await http.get("/v1/health")
        assert (health.status_code, health.json()["status"]) == (200, "degraded")


async def test_ollama_down_is_unhealthy(app_env: dict[str, str]) -> None:
    env = {**app_env, "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}"}
    down = httpx.AsyncHTTPTransport()  # to where nothing listens
    async with in_process(env, upstream=down) as app, app.client() as http:
        ready = (await http.get("/readyz")).json()
        assert ready["checks"]["ollama:responseTime"][0]["status"] == "fail"
        health = await http.get("/v1/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        assert health.json()["ollama"] == "disconnected"
        models = await http.get("/v1/models")
        # /v1/models is the OpenAI surface's: its error in OpenAI's shape, as the SDK reads it
        error = models.json()["error"]
        assert (models.status_code, error["code"], error["type"]) == (
            503, "upstream_unavailable", "server_error")  # fmt: skip
