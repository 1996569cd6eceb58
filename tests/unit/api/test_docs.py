"""The API documented: a valid OpenAPI document that matches the validator, and offline docs."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from app.api.docs import document
from app.errors import InvalidJSON, InvalidRequest
from app.generations.request import parse_body, request_schema
from app.main import create_app
from app.settings import Settings
from tests.support.in_process import InProcess

pytestmark = pytest.mark.anyio


def test_the_document_is_valid_openapi() -> None:
    validate(document())


def test_every_route_is_documented() -> None:
    app = create_app(Settings())
    paths = {
        route.path
        for route in app.routes
        if isinstance(route, Route) and route.path not in ("/docs", "/openapi.json", "/playground")
    }
    assert paths == set(document()["paths"])
    assert any(isinstance(route, Mount) for route in app.routes)  # the Swagger UI files


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"prompt": "hi"}, id="seed"),
        pytest.param({"messages": [{"role": "user", "content": "hi"}], "think": True}, id="chat"),
        pytest.param({"prompt": "hi", "format": {"type": "object"}, "keep_alive": 5}, id="extras"),
        pytest.param({}, id="empty"),
        pytest.param({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, id="both"),
        pytest.param({"prompt": 1}, id="prompt-type"),
        pytest.param({"prompt": "a", "model": "bad name"}, id="model"),
        pytest.param({"prompt": "a", "temperature": 0}, id="unknown"),
        pytest.param({"messages": [{"role": "robot", "content": "b"}]}, id="role"),
        pytest.param({"messages": [{"role": "user"}]}, id="no-content"),
        pytest.param({"prompt": "a", "format": "xml"}, id="format"),
        pytest.param({"prompt": "a", "tools": [{}]}, id="tools-without-chat"),
        pytest.param({"messages": [{"role": "user", "content": "b"}], "tools": [{}]}, id="tools"),
    ],
)
def test_the_documented_schema_agrees_with_the_validator(body: dict[str, Any]) -> None:
    """Both come from one table; this holds them to the same answers."""
    documented = jsonschema.Draft4Validator(request_schema()).is_valid(body)
    try:
        parse_body(body, "llama3.2")
        accepted = True
    except (InvalidRequest, InvalidJSON):
        accepted = False
    assert documented == accepted


async def test_docs_work_offline(app: InProcess) -> None:
    async with app.client() as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "http://" not in page.text
        assert "https://" not in page.text  # nothing from a CDN
        assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text)
        assert len(assets) == 2
        for asset in assets:
            loaded = await client.get(asset)
            assert loaded.status_code == 200
            assert len(loaded.content) > 10_000
        served = (await client.get("/openapi.json")).json()
        assert served == document()
