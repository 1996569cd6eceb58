"""When tracing is on, and what it costs when it is off: nothing is built."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from app.main import create_app
from app.ops import genai, tracing
from app.ops.tracing import TracingMiddleware

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


def layers(app: Starlette) -> list[object]:
    return [m.cls for m in app.user_middleware]


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        (ENDPOINT, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4318/v1/metrics"}, False),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_traces_are_exported_when_an_endpoint_is_given(
    environ: dict[str, str], wanted: bool
) -> None:
    assert tracing.traces_wanted(environ) is wanted


def test_off_there_is_no_layer_no_span_and_no_header(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    app = create_app()
    assert TracingMiddleware not in layers(app)

    def content() -> dict[str, object]:
        raise AssertionError("read while not traced")

    operation = genai.Operation("chat", "m", stream=True, generation_id="g_1", content=content)
    assert operation.span is None
    assert operation.traceparent == ""
    assert tracing.outgoing() == {}


def test_on_the_app_has_the_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert TracingMiddleware in layers(create_app())


def test_a_kept_traceparent_is_linked_only_when_valid() -> None:
    context = tracing.linked("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert context is not None
    assert (context.trace_id, context.span_id) == (0x0AF7651916CD43DD8448EB211C80319C,
                                                   0xB7AD6B7169203331)  # fmt: skip
    assert tracing.linked("") is None
    assert tracing.linked("00-not-a-trace-01") is None


def test_the_request_parameters_the_conventions_name() -> None:
    content = {"kind": "generate", "model": "m", "prompt": "p",
               "options": {"temperature": 0.2, "num_predict": 9, "stop": "\n", "seed": True,
                           "top_k": 40, "mirostat": 1}}  # fmt: skip
    assert genai._request_attributes(content, stream=False) == {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.request.model": "m",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 9,
        "gen_ai.request.stop_sequences": ["\n"],
        "gen_ai.request.top_k": 40,
    }  # a boolean seed is no seed; mirostat has no attribute


def test_labels_name_the_host_without_credentials_with_its_port() -> None:
    assert genai.labels("chat", "vllm", "m", "https://gpu1.internal/v1") == (
        "chat",
        "vllm",
        "m",
        "gpu1.internal",
        "443",
    )
    assert genai.labels("chat", "ollama", "m", "http://10.0.0.5:11434")[3:] == ("10.0.0.5", "11434")
