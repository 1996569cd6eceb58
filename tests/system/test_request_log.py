"""The request log line as a real process writes it: one JSON object per request, with its id."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import orjson
import pytest

from harness.servers import Server
from tests.support.bodies import GENERATE

pytestmark = [pytest.mark.anyio, pytest.mark.system]


async def test_one_json_log_line_per_request_with_its_id(
    start_service: Callable[..., Server],
) -> None:
    service = start_service(LOG_LEVEL="info")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        given = await http.post(GENERATE, json={"prompt": "logged"},
                                headers={"X-Request-ID": "trace-42"})  # fmt: skip
        invented = await http.post(GENERATE, json={"prompt": "logged"},
                                   headers={"X-Request-ID": "bad id\twith tab"})  # fmt: skip
        await http.get("/livez")
    assert given.headers["x-request-id"] == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{32}", invented.headers["x-request-id"])
    service.stop()
    lines = [orjson.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["logger"] == "bib.access"]
    assert [r["path"] for r in requests] == [GENERATE, GENERATE]  # probes only at debug level
    first, second = requests
    assert first["request_id"] == "trace-42"
    assert second["request_id"] == invented.headers["x-request-id"]
    assert (first["cache"], second["cache"]) == ("MISS", "HIT")
    assert first["generation"] == second["generation"]
    assert first["status"] == 200
    assert first["tokens"] == 12
    assert first["client"] == "127.0.0.1"
    assert first["method"] == "POST"
    assert 0 < first["ttft_ms"] <= first["duration_ms"]
