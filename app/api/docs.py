"""``/openapi.json``, ``/docs`` and ``/playground``: the API described, Swagger UI served without
a CDN, and a page to try it with.

The playground is a page with its own script and style files (``app/api/playground/``, served
under ``/playground/assets``) and no inline script, so that its Content-Security-Policy can allow
those files and nothing else; with Trusted Types, no HTML can be made from a string either. The
page shows a model's output as text only (its ``markdown.js``): the policy is the second line,
should a mistake there ever let markup through.

The native request schema comes from ``app.generations.request``, the table that validates
requests, so the document cannot drift from what is accepted; the OpenAI- and Ollama-compatible
operations are described in their own APIs' terms (their field mapping is in
``app.api.openai.requests`` and ``app.api.ollama.routes``). OpenAPI 3.0 (what the bundled Swagger
UI 4 renders); the server-sent events are described as ``text/event-stream`` with one schema per
event's ``data``. Swagger UI's files come from the installed ``swagger-ui-bundle`` package.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import swagger_ui_bundle
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from app import VERSION
from app.generations.request import QUERY_FIELDS, request_schema
from app.responses import JSONBody
from app.settings import BANDS
from app.store.usage import COUNTERS

ASSETS = StaticFiles(directory=swagger_ui_bundle.swagger_ui_path)
PLAYGROUND_ASSETS = StaticFiles(packages=[("app.api", "playground")])
PLAYGROUND_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
))  # fmt: skip

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Byte in Bottle API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="docs"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#docs"});</script>
</body></html>"""


async def docs(request: Request) -> Response:
    return HTMLResponse(_PAGE)


async def playground(request: Request) -> Response:
    """``GET /playground``: a chat whose answers stream through an ``EventSource``."""
    headers = {"Content-Security-Policy": PLAYGROUND_POLICY, "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(_playground_page(), headers=headers)


@cache
def _playground_page() -> str:
    return resources.files("app.api").joinpath("playground.html").read_text()


async def openapi(request: Request) -> Response:
    return JSONBody(document())


ROUTES = [
    Route("/openapi.json", openapi),
    Route("/docs", docs),
    Route("/playground", playground),
    Mount("/docs/assets", app=ASSETS),
    Mount("/playground/assets", app=PLAYGROUND_ASSETS),
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(description: str, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


def _problems(*statuses: int) -> dict[str, Any]:
    problem = {"application/problem+json": {"schema": _ref("Problem")}}
    return {str(s): {"description": "an error, as RFC 9457", "content": problem} for s in statuses}


_LIMIT_HEADERS = {
    "RateLimit-Policy": _header(
        'one item per quota, e.g. "default";q=10;w=60, "tokens";q=20000;w=60;qu="tokens"'
    ),
    "RateLimit": _header('what is left of each, e.g. "default";r=9;t=0, "tokens";r=19000;t=0'),
    "X-Request-ID": _header("the client's request id, or one made up"),
}
_SSE = (
    "Server-sent events: `retry`, then `start` (no id), one `token` per token "
    "(id `<generation>.<n>`), then `done` (id `<generation>.done`) or `error` (id "
    "`<generation>.error`; none for `shutting_down`). `: ping` comments keep it alive. "
    "Each `data` is one line of JSON: see the StartEvent, TokenEvent, DoneEvent and "
    "ErrorEvent schemas."
)
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "resume after this event: `<generation>.<n>`; `.done` or `.error` gives 204",
    "schema": {"type": "string"},
}
_PLACEMENT = [
    {"name": "X-Priority", "in": "header", "required": False,
     "description": "wait for a GPU slot in this band; never above the key's",
     "schema": {"type": "string", "enum": list(BANDS)}},
    {"name": "X-Session-ID", "in": "header", "required": False,
     "description": "the conversation's name: its generations go to the host that served it",
     "schema": {"type": "string"}},
]  # fmt: skip


def _stream_responses() -> dict[str, Any]:
    headers = {"X-Cache": _header("HIT, MISS, JOINED or BYPASS"), **_LIMIT_HEADERS}
    return {
        "200": {
            "description": _SSE + " With `stream: false`, one JSON object instead.",
            "headers": headers,
            "content": {
                "text/event-stream": {"schema": _ref("ServerSentEvent")},
                "application/json": {"schema": _ref("Completion")},
            },
        },
        "204": {"description": "Last-Event-ID named a finished stream: do not reconnect"},
        "429": {
            "description": "over a quota: requests, tokens or concurrency (the body's quota)",
            "headers": {"Retry-After": _header("whole seconds", "integer"), **_LIMIT_HEADERS},
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        },
        **_problems(400, 401, 404, 413, 422, 502, 503, 504),
    }


def _json_answer(
    description: str, schema: dict[str, Any], *errors: int, media: str = "application/json"
) -> dict[str, Any]:
    ok = {"description": description, "content": {media: {"schema": schema}}}
    return {"responses": {"200": ok, **_problems(*errors)}}


def _day(name: str, description: str) -> dict[str, Any]:
    """A query parameter that is a UTC day, ``YYYY-MM-DD``."""
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", "format": "date"}}  # fmt: skip


def _probe(description: str, *, media: str, fails: bool) -> dict[str, Any]:
    """A probe's answers: 200, and (for those that check something) 503 in the same shape."""
    schema = _ref("Health") if media == "application/health+json" else _OBJECT
    answer = {"content": {media: {"schema": schema}}}
    responses = {"200": {"description": description, **answer}}
    if fails:
        responses["503"] = {"description": "failing, or shutting down", **answer}
    return {"responses": responses}


_ABOUT = {"X-Cache": _header("HIT, MISS, JOINED or BYPASS"),
          "X-Generation-ID": _header("the generation: follow it at "
                                     "/v1/chats/generations/<id>/events")}  # fmt: skip


def _errors(schema: str, *statuses: int) -> dict[str, Any]:
    content = {"application/json": {"schema": _ref(schema)}}
    return {str(s): {"description": "an error", "content": content} for s in statuses}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


_OPENAI_STREAM = ("text/event-stream", "`data: <chunk>` blocks, then `data: [DONE]`; "
                  "heartbeats are `: ping` comment lines")  # fmt: skip
_NDJSON = ("application/x-ndjson", "one JSON object a line, the last with done true")


def _answering(summary: str, request: str, answer: str, error: str, *statuses: int,
               stream: tuple[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """A ``POST`` of another API: its request, its answer (or stream), its errors' shape."""
    content: dict[str, Any] = {"application/json": {"schema": _ref(answer)}}
    if stream is not None:
        media, description = stream
        schema: dict[str, Any] = {"type": "string"}
        if media == "text/event-stream":  # one event of it (what a reader sees)
            schema = {"type": "object", "properties": {"data": {"type": "string"}}}
        content[media] = {"schema": {**schema, "description": description}}
    return {"post": {"summary": summary, "requestBody": _body(request), "responses": {
        "200": {"description": "the answer, or its stream", "headers": _ABOUT,
                "content": content},
        **_errors(error, *statuses)}}}  # fmt: skip


_OPENAI_ERRORS = (400, 401, 404, 413, 422, 429, 502, 503, 504)
_ANTHROPIC_ERRORS = (400, 401, 404, 413, 429, 502, 503, 504)
_RESPONSES_STREAM = (
    "text/event-stream",
    "Responses events, each with its sequence_number, "
    "ending with response.completed, response.incomplete or response.failed",
)
_ANTHROPIC_STREAM = (
    "text/event-stream",
    "Anthropic's events: message_start, content blocks, "
    "message_delta, message_stop; event: ping keeps it alive",
)
_RESPONSE = {
    "name": "response",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^resp_[A-Za-z0-9_-]{22}$"},
}
_OLLAMA_ERRORS = (400, 401, 404, 413, 429, 502, 503, 504)


def _ollama_read(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    ok = {"description": summary, "content": {"application/json": {"schema": schema}}}
    return {"get": {"summary": summary,
                    "responses": {"200": ok, **_errors("OllamaError", 401, 502, 503)}}}  # fmt: skip


def _refused(method: str) -> dict[str, Any]:
    return {method: {"summary": "Model management: refused unless OLLAMA_MANAGEMENT=true",
                     "responses": _errors("OllamaError", 401, 403)}}  # fmt: skip


@cache
def document() -> dict[str, Any]:
    body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("CompletionRequest")}},
    }
    query = [
        {"name": name, "in": "query", "required": False,
         "schema": request_schema()["properties"][name]}
        for name in QUERY_FIELDS
    ]  # fmt: skip
    generation = {"name": "generation", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": "^g_[A-Za-z0-9_-]{22}$"}}  # fmt: skip
    return {
        "openapi": "3.0.3",
        "info": {"title": "Byte in Bottle", "version": VERSION,
                 "description": "Streams a local LLM's tokens as server-sent events."},
        "paths": {
            "/v1/chats/generate": {
                "post": {"summary": "Generate (SSE, or JSON with stream false)",
                         "parameters": [_LAST_EVENT_ID, *_PLACEMENT], "requestBody": body,
                         "responses": _stream_responses()},
                "get": {"summary": "Generate, for an EventSource",
                        "parameters": [*query, _LAST_EVENT_ID, *_PLACEMENT],
                        "responses": _stream_responses()},
            },
            "/v1/chats/generations": {
                "post": {"summary": "Start, join or find a generation for an EventSource",
                         "parameters": _PLACEMENT, "requestBody": body, "responses": {
                             "202": {"description": "its events URL (also in Location)",
                                     "content": {"application/json": {
                                         "schema": _ref("GenerationCreated")}}},
                             **_problems(400, 401, 413, 422, 429, 503)}},
            },
            "/v1/chats/generations/{generation}/events": {
                "get": {"summary": "A generation's events, from the start or Last-Event-ID",
                        "parameters": [generation, _LAST_EVENT_ID],
                        "responses": {k: v for k, v in _stream_responses().items()
                                      if k in ("200", "204", "404", "503")}},
            },
            "/v1/chats/generations/{generation}": {
                "delete": {"summary": "Stop a generation for every client",
                           "parameters": [generation],
                           "responses": {"204": {"description": "stopped"}, **_problems(404)}},
            },
            "/livez": {"get": {"summary": "Liveness",
                               **_probe("alive", media="application/health+json", fails=False)}},
            "/readyz": {"get": {"summary": "Readiness: Redis and Ollama answer",
                                **_probe("ready", media="application/health+json", fails=True)}},
            "/v1/health": {"get": {"summary": "Health for people",
                                   **_probe("healthy or degraded", media="application/json",
                                            fails=True)}},
            "/v1/models": {"get": {"summary": "The models of every serving Ollama host: OpenAI's "
                                              "object and data, and Ollama's models",
                                   **_json_answer("the models", _ref("ModelList"), 401, 502,
                                                  503)}},
            "/v1/usage": {"get": {"summary": "What the calling API key used, in total, per "
                                             "model and per UTC day (within "
                                             "USAGE_RETENTION_DAYS)",
                                  "parameters": [
                                      _day("start", "the first day (default: six before end)"),
                                      _day("end", "the last day (default: today, UTC)")],
                                  **_json_answer("the key's use", _ref("Usage"), 401, 422,
                                                 503)}},
            "/v1/chat/completions": _answering(
                "OpenAI-compatible chat completion", "OpenAIChatRequest", "OpenAIObject",
                "OpenAIError", *_OPENAI_ERRORS, stream=_OPENAI_STREAM),
            "/v1/completions": _answering(
                "OpenAI-compatible text completion", "OpenAITextRequest", "OpenAIObject",
                "OpenAIError", *_OPENAI_ERRORS, stream=_OPENAI_STREAM),
            "/v1/embeddings": _answering(
                "OpenAI-compatible embeddings (cached)", "OpenAIEmbeddingsRequest",
                "OpenAIObject", "OpenAIError", *_OPENAI_ERRORS),
            "/v1/responses": _answering(
                "OpenAI Responses: created, stored (unless store is false), streamed or "
                "answered whole, or queued in the background", "ResponsesRequest",
                "ResponseObject", "OpenAIError", *_OPENAI_ERRORS, stream=_RESPONSES_STREAM),
            "/v1/responses/{response}": {
                "parameters": [_RESPONSE],
                "get": {"summary": "A stored response; with stream=true its events again, "
                                   "after starting_after",
                        "parameters": [
                            {"name": "stream", "in": "query", "required": False,
                             "schema": {"type": "string", "enum": ["true", "false"]}},
                            {"name": "starting_after", "in": "query", "required": False,
                             "schema": {"type": "integer"}}],
                        "responses": {"200": {"description": "the response, or its events",
                                              "content": {
                                                  "application/json": {
                                                      "schema": _ref("ResponseObject")},
                                                  _RESPONSES_STREAM[0]: {"schema": {
                                                      "type": "string",
                                                      "description": _RESPONSES_STREAM[1]}}}},
                                      **_errors("OpenAIError", 400, 401, 404)}},
                "delete": {"summary": "Forget a stored response",
                           "responses": {"200": {"description": "deleted", "content": {
                               "application/json": {"schema": _OBJECT}}},
                               **_errors("OpenAIError", 401, 404)}},
            },
            "/v1/responses/{response}/cancel": {
                "parameters": [_RESPONSE],
                "post": {"summary": "Stop a response's generation for every client",
                         "responses": {"200": {"description": "the response, cancelled",
                                               "content": {"application/json": {
                                                   "schema": _ref("ResponseObject")}}},
                                       **_errors("OpenAIError", 401, 404)}},
            },
            "/v1/messages": _answering(
                "Anthropic-compatible Messages (Claude Code)", "AnthropicMessagesRequest",
                "AnthropicMessage", "AnthropicError", *_ANTHROPIC_ERRORS,
                stream=_ANTHROPIC_STREAM),
            "/v1/messages/count_tokens": {"post": {
                "summary": "About how many input tokens a Messages request is (an estimate)",
                "requestBody": _body("AnthropicMessagesRequest"),
                "responses": {"200": {"description": "the estimate", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "input_tokens": {"type": "integer"}}}}}},
                    **_errors("AnthropicError", 400, 401, 413)}}},
            "/api/generate": _answering("Ollama-compatible generate", "OllamaRequest",
                                        "OllamaAnswer", "OllamaError", *_OLLAMA_ERRORS,
                                        stream=_NDJSON),
            "/api/chat": _answering("Ollama-compatible chat", "OllamaRequest", "OllamaAnswer",
                                    "OllamaError", *_OLLAMA_ERRORS, stream=_NDJSON),
            "/api/embed": _answering("Ollama-compatible embeddings (cached)",
                                     "OllamaEmbedRequest", "OllamaAnswer", "OllamaError",
                                     *_OLLAMA_ERRORS),
            "/api/embeddings": _answering("Ollama's legacy embeddings (cached)",
                                          "OllamaEmbedRequest", "OllamaAnswer", "OllamaError",
                                          *_OLLAMA_ERRORS),
            "/api/show": _answering("A model's details, from a host that has it",
                                    "OllamaShowRequest", "OllamaAnswer", "OllamaError",
                                    *_OLLAMA_ERRORS),
            "/api/tags": _ollama_read("The models of every serving host", _ref("OllamaModels")),
            "/api/ps": _ollama_read("The models in memory on every serving host",
                                    _ref("OllamaModels")),
            "/api/version": _ollama_read("A serving host's Ollama version", {
                "type": "object", "properties": {"version": {"type": "string"}}}),
            "/": {"get": {"summary": "Ollama is running", "responses": {"200": {
                "description": "what Ollama answers",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/api/pull": _refused("post"),
            "/api/push": _refused("post"),
            "/api/create": _refused("post"),
            "/api/copy": _refused("post"),
            "/api/delete": _refused("delete"),
            "/api/blobs/{digest}": {**_refused("post"), "parameters": [
                {"name": "digest", "in": "path", "required": True,
                 "schema": {"type": "string"}}]},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {"schemas": _schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "an API key (AUTH optional or required)"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }  # fmt: skip


_OBJECT: dict[str, Any] = {"type": "object"}


def _schemas() -> dict[str, Any]:
    string, boolean, integer = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
    number = {"type": "number"}
    counts = {"type": "object", "properties": dict.fromkeys(COUNTERS, integer)}
    stop = {"oneOf": [string, {"type": "array", "items": string}]}
    return {
        "CompletionRequest": request_schema(),
        "Problem": {"type": "object", "required": ["status", "title", "detail", "error"],
                    "properties": {"status": integer, "title": string, "detail": string,
                                   "error": string, "fields": {"type": "object",
                                   "additionalProperties": string},
                                   "quota": {"enum": ["requests", "tokens", "concurrency"]}}},
        "Completion": {"type": "object", "properties": {
            "model": string, "response": string, "thinking": string, "message": _OBJECT,
            "created_at": string, "done": boolean, "done_reason": string, "cached": boolean,
            "eval_count": integer, "prompt_eval_count": integer, "total_duration": integer}},
        "GenerationCreated": {"type": "object", "properties": {
            "generation": string, "events": string, "cached": boolean}},
        "Health": {"type": "object", "properties": {"status": string, "checks": _OBJECT}},
        "ServerSentEvent": {"type": "object", "description": "one event of the stream",
                            "properties": {
            "event": {"type": "string", "enum": ["queued", "start", "token", "done", "error"]},
            "data": {"type": "string",
                     "description": "one line of JSON: a QueuedEvent ({\"position\": n}, "
                                    "while waiting for a GPU slot), StartEvent, TokenEvent, "
                                    "DoneEvent or ErrorEvent"},
            "id": {"type": "string", "description": "<generation>.<n>, .done or .error"},
            "retry": {"type": "integer", "description": "reconnection delay, milliseconds"}}},
        "StartEvent": {"type": "object", "properties": {
            "generation": string, "model": string, "cached": boolean, "reset": boolean}},
        "TokenEvent": {"type": "object", "properties": {
            "text": string, "thinking": string, "tool_calls": {"type": "array",
                                                              "items": _OBJECT}}},
        "DoneEvent": {"type": "object", "properties": {
            "done_reason": string, "cached": boolean, "eval_count": integer,
            "prompt_eval_count": integer, "total_duration": integer}},
        "ErrorEvent": {"type": "object", "properties": {"error": string, "detail": string}},
        "Usage": {"type": "object", "properties": {
            "key": string, "start": {**string, "format": "date"},
            "end": {**string, "format": "date"}, "totals": counts,
            "by_model": {"type": "object", "additionalProperties": counts},
            "by_day": {"type": "object", "description": "every day of the window",
                       "additionalProperties": counts}}},
        "ModelList": {"type": "object", "properties": {
            "object": string, "data": {"type": "array", "items": _OBJECT},
            "models": {"type": "array", "items": _OBJECT}}},
        "OpenAIError": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "object", "properties": {
                "message": string, "type": string, "param": {"type": "string", "nullable": True},
                "code": string}}}},
        "OpenAIObject": {"type": "object", "description": "chat.completion, text_completion "
                         "or an embeddings list", "properties": {"object": string}},
        "OpenAIChatRequest": {"type": "object", "required": ["messages"], "properties": {
            "model": string, "messages": {"type": "array", "items": _OBJECT},
            "stream": boolean, "stream_options": _OBJECT, "temperature": number,
            "top_p": number, "seed": integer, "max_tokens": integer,
            "max_completion_tokens": integer, "stop": stop,
            "frequency_penalty": number, "presence_penalty": number,
            "response_format": _OBJECT, "tools": {"type": "array", "items": _OBJECT},
            "tool_choice": string, "reasoning_effort": string, "user": string,
            "options": _OBJECT, "cache": boolean}},
        "OpenAITextRequest": {"type": "object", "required": ["prompt"], "properties": {
            "model": string, "prompt": string, "stream": boolean, "stream_options": _OBJECT,
            "temperature": number, "top_p": number, "seed": integer, "max_tokens": integer,
            "stop": stop, "frequency_penalty": number, "presence_penalty": number,
            "user": string, "options": _OBJECT, "cache": boolean}},
        "OpenAIEmbeddingsRequest": {"type": "object", "required": ["input"], "properties": {
            "model": string, "input": {"oneOf": [string, {"type": "array", "items": string}]},
            "dimensions": integer, "encoding_format": {"type": "string",
                                                       "enum": ["float", "base64"]},
            "user": string}},
        "OllamaRequest": {**request_schema(), "description": "Ollama's own fields: prompt for "
                          "/api/generate, messages for /api/chat; stream is true by default"},
        "OllamaEmbedRequest": {"type": "object", "properties": {
            "model": string, "input": {"oneOf": [string, {"type": "array", "items": string}]},
            "prompt": string, "truncate": boolean, "dimensions": integer,
            "options": _OBJECT, "keep_alive": string}},
        "OllamaShowRequest": {"type": "object", "required": ["model"],
                              "properties": {"model": string}},
        "OllamaAnswer": _OBJECT,
        "OllamaModels": {"type": "object", "properties": {
            "models": {"type": "array", "items": _OBJECT}}},
        "OllamaError": {"type": "object", "required": ["error"], "properties": {"error": string}},
        "ResponsesRequest": {"type": "object", "properties": {
            "model": string, "input": {"oneOf": [string, {"type": "array", "items": _OBJECT}]},
            "instructions": string, "tools": {"type": "array", "items": _OBJECT},
            "tool_choice": string, "stream": boolean, "store": boolean, "background": boolean,
            "previous_response_id": string, "temperature": number, "top_p": number,
            "max_output_tokens": integer, "reasoning": _OBJECT, "text": _OBJECT,
            "metadata": _OBJECT}},
        "ResponseObject": {"type": "object", "properties": {
            "id": string, "object": string, "status": string, "model": string,
            "output": {"type": "array", "items": _OBJECT},
            "usage": {**_OBJECT, "nullable": True},  # none until it is done
            "error": {**_OBJECT, "nullable": True},
            "previous_response_id": {**string, "nullable": True}}},
        "AnthropicMessagesRequest": {"type": "object", "required": ["messages"], "properties": {
            "model": string, "max_tokens": integer,
            "messages": {"type": "array", "items": _OBJECT},
            "system": {"oneOf": [string, {"type": "array", "items": _OBJECT}]},
            "stream": boolean, "temperature": number, "top_p": number, "top_k": integer,
            "stop_sequences": {"type": "array", "items": string},
            "tools": {"type": "array", "items": _OBJECT}, "tool_choice": _OBJECT,
            "thinking": _OBJECT, "metadata": _OBJECT}},
        "AnthropicMessage": {"type": "object", "properties": {
            "id": string, "type": string, "role": string, "model": string,
            "content": {"type": "array", "items": _OBJECT}, "stop_reason": string,
            "usage": _OBJECT}},
        "AnthropicError": {"type": "object", "required": ["type", "error"], "properties": {
            "type": string, "error": {"type": "object", "properties": {
                "type": string, "message": string}}}},
    }  # fmt: skip
