"""Prometheus metrics across workers, over real processes: every worker's counts add up."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from harness.servers import Server, sample

pytestmark = [pytest.mark.anyio, pytest.mark.system]

GENERATE = "/v1/chats/generate"


async def test_metrics_of_two_workers_add_up(start_service: Callable[..., Server]) -> None:
    service = start_service(WEB_CONCURRENCY="2", RATE_LIMIT_MAX="4")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        for i in range(4):
            await http.post(GENERATE, json={"prompt": f"metrics {i % 2}", "stream": i != 3})
        assert (await http.post(GENERATE, json={"prompt": "over"})).status_code == 429
        faulty = {"prompt": "x", "options": {"sim_fault": "500"}}
        await http.post(GENERATE, json=faulty, headers={"X-Forwarded-For": "192.0.2.9"})
        scrapes = [await http.get("/metrics") for _ in range(6)]  # answered by either worker
    assert {s.status_code for s in scrapes} == {200}  # never rate limited
    assert scrapes[0].headers["content-type"].startswith("text/plain; version=")
    text = scrapes[-1].text
    route = {"route": GENERATE, "method": "POST"}
    assert sample(text, "bib_requests_total", status="200", **route) == 4
    assert sample(text, "bib_requests_total", status="429", **route) == 1
    assert sample(text, "bib_requests_total", status="502", **route) == 1
    assert sample(text, "bib_cache_results_total", result="miss") == 3  # two plus the faulty one
    assert sample(text, "bib_cache_results_total", result="hit") == 2
    assert sample(text, "bib_generations_total", outcome="completed") == 2
    assert sample(text, "bib_generations_total", outcome="failed") == 1
    assert sample(text, "bib_upstream_errors_total", kind="upstream_error") == 1
    assert sample(text, "bib_rate_limited_total", quota="requests") == 1
    assert sample(text, "bib_tokens_relayed_total") == 12 * 3  # three streams, 12 tokens each
    assert sample(text, "bib_time_to_first_token_seconds_count") == 3
    assert sample(text, "bib_open_streams") == 0
