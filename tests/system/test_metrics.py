"""Prometheus metrics across workers, over real processes: every worker's counts add up, every
known label value is there from the start, and the samples' folder leaves with the service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from harness.servers import Server, free_port, sample, series

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


async def test_known_label_values_are_zero_before_anything_happened(
    start_service: Callable[..., Server], service_env: dict[str, str]
) -> None:
    """Across workers too (their samples' files): an alert reads 0, not "no data"."""
    service = start_service(WEB_CONCURRENCY="2")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        text = (await http.get("/metrics")).text
    for quota in ("requests", "tokens", "concurrency", "queue"):
        assert sample(text, "bib_rate_limited_total", quota=quota) == 0
    assert sample(text, "bib_generations_total", outcome="failed") == 0
    assert sample(text, "bib_slow_requests_total", part="head") == 0
    # the GenAI series of every model a host listed, as the OpenTelemetry mapping names them
    port = service_env["OLLAMA_HOST"].rsplit(":", 1)[1]
    for model in ("llama3.2:latest", "qwen3:latest"):
        of = {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "ollama",
            "gen_ai_request_model": model,
            "server_address": "127.0.0.1",
            "server_port": port,
        }
        tokens = series(text, "gen_ai_client_token_usage_count", gen_ai_token_type="output", **of)
        assert tokens == 0
        duration = "gen_ai_client_operation_duration_seconds_count"
        assert series(text, duration, error_type="", **of) == 0


def test_the_service_removes_the_metrics_folder_it_made(
    start_service: Callable[..., Server], tmp_path: Path
) -> None:
    """Without ``PROMETHEUS_MULTIPROC_DIR``, ``python -m app`` makes a temporary folder for its
    workers' samples; every run used to leave one behind (107 after one suite run)."""
    service = start_service(TMPDIR=str(tmp_path), PROMETHEUS_MULTIPROC_DIR="")
    assert [p.name[:12] for p in tmp_path.iterdir()] == ["bib-metrics-"]  # made, while it runs
    service.stop()
    assert list(tmp_path.iterdir()) == []


async def test_ready_is_what_readyz_would_answer_at_each_scrape(
    start_service: Callable[..., Server],
) -> None:
    """``bib_ready`` (``BibNotReady``'s series) follows Redis and the hosts without any probe."""
    ready = start_service()
    down = start_service(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    async with httpx.AsyncClient(timeout=30) as http:
        assert sample((await http.get(ready.url + "/metrics")).text, "bib_ready") == 1
        assert series((await http.get(down.url + "/metrics")).text, "bib_ready") == 0
        assert (await http.get(down.url + "/readyz")).status_code == 503
