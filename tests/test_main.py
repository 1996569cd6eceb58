"""The app factory's error handlers: every failure is a problem document, a bug's without its
trace."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from app.main import create_app
from app.settings import Settings

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
