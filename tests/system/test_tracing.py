"""OpenTelemetry over real sockets: the app under uvicorn exports over OTLP/HTTP to a receiver in
this process (``harness.otlp``), as it would to a Collector, and the simulator says what trace
context it was sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from harness.otlp import Receiver, Span
from harness.servers import Server, free_port, sample, simulator_counters

pytestmark = [pytest.mark.anyio, pytest.mark.system]

CHAT = "/v1/chat/completions"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def traced(receiver: Receiver, **env: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "bib-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # milliseconds: exported soon after
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        **env,
    }


def chat(text: str, **more: object) -> dict[str, object]:
    return {"model": "llama3.2", "messages": [{"role": "user", "content": text}], **more}


def one(spans: list[Span], wanted: dict[str, object]) -> Span:
    """The one span with the ``wanted`` attributes."""
    found = [s for s in spans if all(s.attributes.get(k) == v for k, v in wanted.items())]
    assert len(found) == 1, (wanted, spans)
    return found[0]


async def test_a_miss_a_hit_a_join_and_a_refusal_as_spans(
    receiver: Receiver, start_service: Callable[..., Server], simulator: Server
) -> None:
    service = start_service(**traced(receiver, RATE_LIMIT_MAX="4"))
    caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    body = chat("trace me", stream=True, temperature=0.5, max_tokens=50)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        async with http.stream("POST", CHAT, json=body, headers=caller) as miss:
            assert miss.status_code == 200
            seen_by_engine = simulator_counters(simulator)["traceparent"]
            await miss.aread()
        generation = miss.headers["x-generation-id"]
        hit = await http.post(CHAT, json=body)
        assert hit.headers["x-cache"] == "HIT"
        slow = {"prompt": "join me", "stream": False, "options": {"sim_token_delay": 0.05}}
        leader, joiner = await asyncio.gather(
            http.post("/v1/chats/generate", json=slow), _after(0.2, http, slow)
        )
        assert (leader.headers["x-cache"], joiner.headers["x-cache"]) == ("MISS", "JOINED")
        refused = await http.post(CHAT, json=chat("over"))
        assert refused.status_code == 429

    receiver.wait_for(lambda r: len([s for s in r.spans if s.kind == 2]) >= 5)
    spans = receiver.spans
    assert {s.resource["service.name"] for s in spans} == {"bib-under-test"}

    # the miss: the caller's trace continued, its generation a client span under it, and the
    # engine asked with that client span's context
    request, upstream = sorted((s for s in spans if s.trace_id == CALLER_TRACE),
                               key=lambda s: s.kind)  # fmt: skip
    assert (request.kind, upstream.kind) == (2, 3)  # server, client
    assert request.parent_span_id == CALLER_SPAN
    assert request.name == f"POST {CHAT}"
    assert request.attributes["bib.cache"] == "MISS"
    assert request.attributes["http.response.status_code"] == 200
    assert upstream.parent_span_id == request.span_id
    assert upstream.name == "chat llama3.2"
    attributes = upstream.attributes
    port = int(simulator.url.rsplit(":", 1)[1])
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "ollama"
    assert attributes["gen_ai.request.model"] == "llama3.2"
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.request.max_tokens"] == 50
    assert attributes["gen_ai.response.id"] == generation
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["gen_ai.usage.output_tokens"] == 12
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", port)
    assert attributes["bib.upstream.host"] == simulator.url
    assert "gen_ai.input.messages" not in attributes  # content is opt-in
    assert "gen_ai.output.messages" not in attributes
    assert seen_by_engine == f"00-{CALLER_TRACE}-{upstream.span_id}-01"

    # the hit and the joiner link to the generation that made their tokens
    hit_span = one(spans, {"bib.cache": "HIT"})
    assert hit_span.links == [(CALLER_TRACE, upstream.span_id)]
    assert hit_span.trace_id != CALLER_TRACE  # a trace of its own
    leading = one(spans, {"bib.cache": "MISS", "http.route": "/v1/chats/generate"})
    [led] = [s for s in spans if s.parent_span_id == leading.span_id]
    assert (led.kind, led.name) == (3, "text_completion llama3.2")
    joined = one(spans, {"bib.cache": "JOINED"})
    assert joined.attributes["bib.joined"] is True
    assert joined.links == [(led.trace_id, led.span_id)]

    # the refusal: a server span with the quota, and no generation
    refusal = one(spans, {"http.response.status_code": 429})
    assert refusal.attributes["bib.quota.refused"] == "requests"
    assert refusal.attributes["bib.error"] == "rate_limited"
    assert len([s for s in spans if s.kind == 3]) == 2  # the miss's and the leader's


async def _after(seconds: float, http: httpx.AsyncClient, body: dict[str, object]
                 ) -> httpx.Response:  # fmt: skip
    await asyncio.sleep(seconds)
    return await http.post("/v1/chats/generate", json=body)


async def test_content_only_when_opted_in_and_the_genai_metrics_both_ways(
    receiver: Receiver, start_service: Callable[..., Server], simulator: Server
) -> None:
    """Prompt and answer text on the span with the conventions' opt-in; the four GenAI
    histograms on ``/metrics`` and over OTLP."""
    optin = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    service = start_service(**traced(receiver, **optin))
    body = {"model": "qwen3", "system": "Be brief.", "prompt": "tell me", "stream": False}
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        answer = (await http.post("/v1/chats/generate", json=body)).json()
        scraped = (await http.get("/metrics")).text
    receiver.wait_for(lambda r: any(s.kind == 3 for s in r.spans))
    [upstream] = [s for s in receiver.spans if s.kind == 3]
    assert "gen_ai.request.stream" not in upstream.attributes  # set only when streaming
    assert orjson.loads(upstream.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "tell me"}]}
    ]
    assert orjson.loads(upstream.attributes["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Be brief."}
    ]
    [output] = orjson.loads(upstream.attributes["gen_ai.output.messages"])
    assert output["parts"] == [{"type": "text", "content": answer["response"]}]
    assert output["role"] == "assistant"

    port = simulator.url.rsplit(":", 1)[1]
    of = {
        "gen_ai_operation_name": "text_completion",
        "gen_ai_provider_name": "ollama",
        "gen_ai_request_model": "qwen3",
        "server_address": "127.0.0.1",
        "server_port": port,
    }
    tokens = "gen_ai_client_token_usage"
    assert sample(scraped, f"{tokens}_count", gen_ai_token_type="output", **of) == 1
    assert sample(scraped, f"{tokens}_sum", gen_ai_token_type="output", **of) == 12
    assert sample(scraped, f"{tokens}_sum", gen_ai_token_type="input", **of) > 0
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert sample(scraped, duration, error_type="", **of) == 1
    first = "gen_ai_client_operation_time_to_first_chunk_seconds_count"
    assert sample(scraped, first, **of) == 1
    per_chunk = "gen_ai_client_operation_time_per_output_chunk_seconds_count"
    assert sample(scraped, per_chunk, **of) == 11  # every chunk after the first
    receiver.wait_for(lambda r: {"gen_ai.client.token.usage", "gen_ai.client.operation.duration",
                                 "gen_ai.client.operation.time_to_first_chunk",
                                 "gen_ai.client.operation.time_per_output_chunk"}
                      <= r.metric_names())  # fmt: skip
    attributes = {"gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "ollama",
                  "gen_ai.request.model": "qwen3", "server.address": "127.0.0.1",
                  "server.port": int(port)}  # fmt: skip
    assert receiver.histogram("gen_ai.client.operation.time_per_output_chunk")[0][:2] == (
        attributes,
        11,
    )
    usage = receiver.histogram("gen_ai.client.token.usage")
    assert ({**attributes, "gen_ai.token.type": "output"}, 1, 12) in usage


async def test_a_bad_traceparent_starts_a_trace_and_a_collector_away_costs_nothing_else(
    receiver: Receiver, start_service: Callable[..., Server]
) -> None:
    """A malformed ``traceparent`` is ignored (a trace of its own), and a collector that is
    not there loses the spans, logged, but no answer."""
    service = start_service(**traced(receiver))
    gone = start_service(
        **traced(receiver, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    )
    bad = {"traceparent": "00-not-a-trace-01"}
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(service.url + CHAT, json=chat("bad parent"), headers=bad)
        assert answer.status_code == 200
        lost = await http.post(gone.url + CHAT, json=chat("nobody collects"))
        assert lost.status_code == 200
    receiver.wait_for(lambda r: any(s.kind == 2 for s in r.spans))
    [request] = [s for s in receiver.spans if s.kind == 2]
    assert request.parent_span_id == ""
    deadline = time.monotonic() + 10
    while "dropped" not in gone.output():
        assert time.monotonic() < deadline, gone.output()
        await asyncio.sleep(0.1)
