"""OpenAI's wire format: the bodies and stream chunks of ``/v1/chat/completions`` and
``/v1/completions``, its error object and its model list, and nothing else.

A stream is ``data: <chunk>`` blocks ending with ``data: [DONE]``. The ``openai`` SDK parses the
data of every block that is not ``[DONE]`` as JSON and keeps an ``id:`` once seen, so that
later a bare blank line would become an event with empty data and crash it: these streams
never carry ``id:``, ``retry:`` or ``event:``, and their heartbeat is the native one, a comment
line with no blank line after it (``app.api.relay.SSE_PING``), which the SDK and fetch readers skip.

Ids are the generation's (``chatcmpl-<generation>``), so a cached answer keeps the id it had and
a client can follow the generation at ``/v1/chats/generations/<generation>/events``. Thinking
goes out as ``reasoning``, as Ollama's own OpenAI layer sends it; tool calls get the arguments
as a JSON string, with ids made from the generation and their position.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from starlette.responses import Response

from app.errors import InvalidRequest, ModelNotAllowed, RateLimited, ServiceError, Unsupported
from app.generations.answer import Answer
from app.generations.wire import SENTINEL, Unqueued, splice_texts, token_fields, token_payload

Endpoint = Literal["chat", "text"]  # /v1/chat/completions, /v1/completions
DONE = b"data: [DONE]\n\n"
FINGERPRINT = "fp_ollama"
# our error codes as OpenAI's error types, which its SDKs show; the status decides the class
_TYPES = {400: "invalid_request_error", 403: "invalid_request_error", 404: "invalid_request_error",
          413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error"}  # fmt: skip


def error_body(exc: ServiceError) -> dict[str, Any]:
    """OpenAI's ``{"error": {"message", "type", "param", "code"}}``, with our code; ``param``
    names the field at fault, when one is."""
    kind = _TYPES.get(exc.status_code, "server_error" if exc.status_code >= 500 else "api_error")
    if isinstance(exc, Unsupported):
        param = exc.field
    elif isinstance(exc, ModelNotAllowed):
        param = "model"
    else:
        param = next(iter(exc.fields), None) if isinstance(exc, InvalidRequest) else None
    error = {"message": exc.detail, "type": kind, "param": param, "code": exc.code}
    if isinstance(exc, RateLimited):
        error["quota"] = exc.quota
    return {"error": error}


def error_response(exc: ServiceError) -> Response:
    """The error as the OpenAI SDKs read one, with its own status and headers."""
    return Response(orjson.dumps(error_body(exc)), status_code=exc.status_code,
                    headers=exc.headers, media_type="application/json")  # fmt: skip


def model_list(models: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``/v1/models``' ``data``: Ollama's ``/api/tags`` entries as OpenAI model objects, and as
    Anthropic's (``type``, ``display_name``, ``created_at``), whose SDK reads the same path."""
    listed = []
    for model in models:
        name, created = str(model.get("name")), _created(model)
        stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        listed.append({"id": name, "object": "model", "created": created, "owned_by": "library",
                       "type": "model", "display_name": name, "created_at": stamp})  # fmt: skip
    return listed


def _created(model: Mapping[str, Any]) -> int:
    """``modified_at`` (RFC 3339, nanoseconds and all) as seconds since the epoch."""
    stamp = str(model.get("modified_at", ""))
    try:
        return int(datetime.fromisoformat(stamp[:19]).timestamp())
    except ValueError:
        return 0


def _head(endpoint: Endpoint, generation: str, *, chunk: bool) -> dict[str, Any]:
    """The ``id`` and ``object`` of a response or of one of its stream's chunks."""
    if endpoint == "chat":
        kind = "chat.completion.chunk" if chunk else "chat.completion"
        return {"id": f"chatcmpl-{generation}", "object": kind}
    return {"id": f"cmpl-{generation}", "object": "text_completion"}


def usage(stats: Mapping[str, Any]) -> dict[str, int]:
    prompt, completion = int(stats.get("prompt_eval_count", 0)), int(stats.get("eval_count", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def finish_reason(stats: Mapping[str, Any], *, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if stats.get("done_reason") == "length" else "stop"


def tool_calls(
    generation: str, first: int, calls: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Ollama's tool calls (arguments as an object) as OpenAI's (arguments as JSON text)."""
    found = []
    for index, call in enumerate(calls, first):
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        found.append({
            "index": index,
            "id": f"call_{generation[2:]}_{index}",
            "type": "function",
            "function": {"name": function.get("name", ""), "arguments": arguments},
        })  # fmt: skip
    return found


class ChunkWire(Unqueued):
    """The ``Wire`` of one OpenAI stream (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, model: str, *, include_usage: bool) -> None:
        self._endpoint = endpoint
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time())
        self._tool_calls = 0
        self._splice: tuple[str, bytes, bytes] | None = None
        # a cached completion's replay is kept with the "created" of its first: it was made then
        self.replay_key: tuple[str, ...] = ("openai", endpoint, model, str(include_usage))

    def _chunk(self, generation: str, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {
            **_head(self._endpoint, generation, chunk=True),
            "created": self._created,
            "model": self._model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            **extra,
        }
        return b"data: %s\n\n" % orjson.dumps(chunk)

    def tokens(self, generation: str, first_index: int, payloads: Sequence[bytes]) -> bytes:
        before, after = self._spliced(generation)
        return splice_texts(payloads, before, after,
                                   lambda payload: self._token(generation, payload))  # fmt: skip

    def _spliced(self, generation: str) -> tuple[bytes, bytes]:
        """A text token's chunk around its text, made once by ``_token`` itself."""
        if self._splice is None or self._splice[0] != generation:
            whole = self._token(generation, token_payload({"text": "\0"}))
            before, after = whole.split(SENTINEL)
            self._splice = (generation, before, after)
        return self._splice[1], self._splice[2]

    def _token(self, generation: str, payload: bytes) -> bytes:
        fields = token_fields(payload)
        if self._endpoint == "text":
            choice = {"index": 0, "text": fields.get("text", ""), "finish_reason": None}
            return self._chunk(generation, [choice])
        delta: dict[str, Any] = {"role": "assistant", "content": fields.get("text", "")}
        if "thinking" in fields:
            delta["reasoning"] = fields["thinking"]
        if "tool_calls" in fields:
            delta["tool_calls"] = tool_calls(generation, self._tool_calls, fields["tool_calls"])
            self._tool_calls += len(fields["tool_calls"])
        return self._chunk(generation, [{"index": 0, "delta": delta, "finish_reason": None}])

    def done(self, generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
        reason = finish_reason(stats, tool_calls=self._tool_calls > 0)
        if self._endpoint == "chat":
            last = {"index": 0, "delta": {}, "finish_reason": reason}
        else:
            last = {"index": 0, "text": "", "finish_reason": reason}
        end = self._chunk(generation, [last])
        if self._include_usage:
            end += self._chunk(generation, [], usage=usage(stats))
        return end + DONE

    def error(self, generation: str, exc: ServiceError) -> bytes:
        """An error chunk, which the SDK raises as ``APIError``; the stream ends after it."""
        return b"data: %s\n\n" % orjson.dumps(error_body(exc))


def completion(endpoint: Endpoint, generation: str, answer: Answer) -> dict[str, Any]:
    """A whole answer as ``chat.completion`` or ``text_completion``."""
    reason = finish_reason(answer.stats, tool_calls=bool(answer.tool_calls))
    if endpoint == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.thinking:
            message["reasoning"] = answer.thinking
        if answer.tool_calls:
            message["tool_calls"] = tool_calls(generation, 0, answer.tool_calls)
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": reason}
    else:
        choice = {"index": 0, "text": answer.text, "finish_reason": reason}
    return {
        **_head(endpoint, generation, chunk=False),
        "created": int(time.time()),
        "model": answer.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
        "usage": usage(answer.stats),
    }


def embeddings(answer: Mapping[str, Any], model: str, encoding: str) -> dict[str, Any]:
    """Ollama's ``/api/embed`` answer as OpenAI's, each vector as floats or, for ``base64``,
    as little-endian float32 bytes in base64 (what the SDK decodes)."""
    vectors = answer.get("embeddings") or []
    data = []
    for index, vector in enumerate(vectors):
        encoded: Any = vector
        if encoding == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = int(answer.get("prompt_eval_count", 0))
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
