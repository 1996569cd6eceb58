"""`curl --no-buffer`, as people use it, sees each token when the model says it."""

from __future__ import annotations

import subprocess
import time

import pytest

from harness.servers import Server

pytestmark = pytest.mark.system


def test_curl_no_buffer_shows_tokens_as_they_arrive(service: Server) -> None:
    body = '{"prompt": "curl", "options": {"sim_tokens": 5, "sim_token_delay": 0.25}}'
    started = time.monotonic()
    with subprocess.Popen(
        ["curl", "--silent", "--no-buffer", "--data", body, service.url + "/v1/chats/generate"],
        stdout=subprocess.PIPE,
    ) as curl:
        assert curl.stdout is not None
        arrivals: dict[bytes, float] = {}  # first arrival of each event type
        for line in iter(curl.stdout.readline, b""):
            arrivals.setdefault(line.strip(), time.monotonic() - started)
    assert curl.returncode == 0
    assert arrivals[b"event: done"] - arrivals[b"event: token"] > 0.75
