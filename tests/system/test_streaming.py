"""The generation endpoint over real sockets, where streams must arrive as they happen: uvicorn,
the simulator and Valkey."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import httpx
import pytest

from harness.servers import Server, simulator_counters
from tests.support import sse
from tests.support.bodies import GENERATE

pytestmark = [pytest.mark.anyio, pytest.mark.system]


async def test_tokens_leave_as_soon_as_ollama_sends_them(client: httpx.AsyncClient) -> None:
    """With 200 ms between tokens, the first token arrives long before the generation ends."""
    body = {"prompt": "slowly", "options": {"sim_tokens": 5, "sim_token_delay": 0.2}}
    received = await sse.fetch(client, "POST", GENERATE, json=body)
    first = received.arrival_of(b".0\nevent: token")
    second = received.arrival_of(b".1\nevent: token")
    done = received.arrival_of(b"\nevent: done\n")
    assert done - first > 0.6  # four more gaps of 0.2 s followed the first token
    assert second - first > 0.1


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        pytest.param("error", "upstream_error", id="error-line"),
        pytest.param("drop", "upstream_error", id="dropped-connection"),
        pytest.param("garbage", "upstream_error", id="garbage"),
        pytest.param("hang", "upstream_timeout", id="silence-past-idle-timeout"),
    ],
)
async def test_failure_after_stream_began_is_an_error_event(
    client: httpx.AsyncClient, fault: str, code: str
) -> None:
    """After tokens went out the status is 200; the stream ends with one error event."""
    body = {"prompt": "fails", "options": {"sim_fault": fault, "sim_fault_after": 3}}
    received = await sse.fetch(client, "POST", GENERATE, json=body)
    assert received.status == 200
    start, *tokens, error = received.events()
    generation = start.json()["generation"]
    assert len(tokens) == 3
    assert error.type == "error"
    assert error.last_event_id == f"{generation}.error"
    assert error.json()["error"] == code
    assert error.json()["detail"]


async def test_no_first_token_in_time_is_504(start_service: Callable[..., Server]) -> None:
    """An upstream timeout shorter than the heartbeat still fails with a status."""
    service = start_service(UPSTREAM_TIMEOUT="0.5", HEARTBEAT_INTERVAL="5")
    body = {"prompt": "a", "options": {"sim_fault": "hang", "sim_fault_after": 0}}
    async with httpx.AsyncClient(base_url=service.url) as http:
        response = await http.post(GENERATE, json=body)
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"


async def test_long_model_load_commits_to_the_stream_with_pings(
    start_service: Callable[..., Server],
) -> None:
    """Silent Ollama past the first heartbeat: 200 at once, then pings until the first token."""
    service = start_service(HEARTBEAT_INTERVAL="0.3")
    body = {"prompt": "a", "options": {"sim_first_token_delay": 1.2, "sim_tokens": 2}}
    async with httpx.AsyncClient(base_url=service.url) as http:
        received = await sse.fetch(http, "POST", GENERATE, json=body)
    assert received.status == 200
    assert received.arrival_of(b"\nevent: start\n") < 0.9
    items = received.items()
    first_token = next(i for i, item in enumerate(items) if getattr(item, "type", "") == "token")
    pings = [item for item in items[:first_token] if item == sse.Comment("ping")]
    assert len(pings) >= 3  # at 0.3 s when the response started, then every 0.3 s
    assert [e.type for e in received.events()] == ["start", "token", "token", "done"]


async def test_client_disconnect_cancels_upstream(
    client: httpx.AsyncClient, simulator: Server
) -> None:
    """Hanging up mid-stream closes the request to Ollama within a second."""
    before = simulator_counters(simulator)
    body = {"prompt": "long", "options": {"sim_tokens": 200, "sim_token_delay": 0.05}}
    await sse.fetch(client, "POST", GENERATE, json=body, stop_after=b".2\nevent: token")
    hung_up = time.monotonic()
    while simulator_counters(simulator)["cancelled"] == before["cancelled"]:
        assert time.monotonic() - hung_up < 1.0, "upstream still running a second after hang-up"
        await anyio.sleep(0.02)
    assert simulator_counters(simulator)["completed"] == before["completed"]
