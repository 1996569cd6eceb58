"""The app factory: its error handlers (every failure is a problem document, a bug's without its
trace) and its CORS, in-process."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from app.main import create_app
from app.settings import Settings
from tests.support.in_process import in_process

pytestmark = pytest.mark.anyio


async def test_a_bug_is_a_500_problem_without_its_trace(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings())

    async def broken(request: Request) -> Response:
        raise RuntimeError("a secret detail")

    app.add_route("/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://bib.test") as http:
        with caplog.at_level(logging.ERROR, logger="app.api.routing"):
            answer = await http.get("/broken")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == {
        "status": 500,
        "title": "Internal Server Error",
        "detail": "The service failed to handle this request.",
        "error": "internal_error",
    }
    assert "a secret detail" not in answer.text
    (logged,) = [r for r in caplog.records if r.name == "app.api.routing"]
    assert logged.exc_info is not None  # the trace goes to the log, for the people who fix it
    assert "GET /broken" in logged.getMessage()


async def test_cors_preflight_for_a_json_post(app_env: dict[str, str]) -> None:
    env = {**app_env, "ALLOWED_ORIGINS": "https://app.example"}
    async with in_process(env) as app, app.client() as http:
        allowed = await http.options(
            "/v1/chats/generate",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, last-event-id",
            },
        )
        refused = await http.options(
            "/v1/chats/generate",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        actual = await http.post(
            "/v1/chats/generate",
            json={"prompt": "cors", "stream": False},
            headers={"Origin": "https://app.example"},
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    allowed_headers = allowed.headers["access-control-allow-headers"].lower()
    assert "content-type" in allowed_headers
    assert "last-event-id" in allowed_headers
    assert refused.status_code == 400
    exposed = actual.headers["access-control-expose-headers"].lower()
    for header in ("x-cache", "ratelimit", "ratelimit-policy", "x-request-id", "retry-after"):
        assert header in exposed
