"""Request ids, in-process: echoed when plain, made otherwise, on every answer."""

from __future__ import annotations

import re

import pytest

from tests.support.in_process import InProcess

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("given", "echoed"),
    [
        pytest.param("trace-42", "trace-42", id="plain-token"),
        pytest.param("a.b:c_d-9", "a.b:c_d-9", id="punctuation"),
        pytest.param("bad id\twith tab", None, id="whitespace"),
        pytest.param("x" * 129, None, id="too-long"),
        pytest.param("", None, id="empty"),
    ],
)
async def test_a_request_id_is_echoed_when_plain_and_made_otherwise(
    app: InProcess, given: str, echoed: str | None
) -> None:
    async with app.client() as http:
        answer = await http.get("/livez", headers={"X-Request-ID": given})
    if echoed is None:
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    else:
        assert answer.headers["x-request-id"] == echoed


async def test_an_answer_without_a_route_has_an_id_too(app: InProcess) -> None:
    async with app.client() as http:
        missing = await http.get("/nowhere")
    assert missing.status_code == 404
    assert re.fullmatch(r"[0-9a-f]{32}", missing.headers["x-request-id"])
