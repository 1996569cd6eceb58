"""The OpenAI-compatible routes in-process: every one of them answers errors in OpenAI's shape."""

from __future__ import annotations

import httpx
import pytest

from harness.servers import free_port
from tests.support.in_process import in_process

pytestmark = pytest.mark.anyio


async def test_the_model_list_answers_errors_in_openais_shape(app_env: dict[str, str]) -> None:
    """``/v1/models`` is the OpenAI surface's: its 401 and 503 are OpenAI's errors, as the SDK
    reads them. The shape used to be chosen by a list of OpenAI paths that lacked it, so both
    came back as RFC 9457 documents."""
    env = {**app_env, "AUTH": "required", "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}"}
    down = httpx.AsyncHTTPTransport()  # to where nothing listens
    async with in_process(env, upstream=down) as app, app.client() as http:
        refused = await http.get("/v1/models")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/json"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "unauthorized"
    async with in_process({**env, "AUTH": "off"}, upstream=down) as app, app.client() as http:
        unavailable = await http.get("/v1/models")
        assert unavailable.status_code == 503
        assert unavailable.json()["error"] == {"message": "no Ollama host is serving",
                                               "type": "server_error", "param": None,
                                               "code": "upstream_unavailable"}  # fmt: skip
