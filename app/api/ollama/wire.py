"""Ollama's own wire format, as its ``/api/generate`` and ``/api/chat`` answer: NDJSON lines,
one JSON object each, the last with ``"done": true`` and Ollama's statistics; an error after
the stream began is a line ``{"error": "..."}``. No line is ever blank: the official clients
``json.loads`` every line. NDJSON has no form for a heartbeat, so these streams send none.

The statistics are those Ollama sent (``done_reason``, the counts and durations); ``context``,
which ``/api/generate`` once returned for continuing a conversation, is not kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from app.errors import InvalidRequest, RateLimited, ServiceError
from app.generations.answer import Answer
from app.generations.request import Kind
from app.generations.wire import SENTINEL, Unqueued, splice_texts, token_fields, token_payload

MEDIA_TYPE = "application/x-ndjson"
RUNNING = "Ollama is running"


_LINE_BREAKS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"),
                (b"\xc2\x85", b"\\u0085"))  # fmt: skip


def dumps(value: Any) -> bytes:
    """One NDJSON line's JSON, with nothing ``str.splitlines`` breaks at."""
    return _escaped(orjson.dumps(value))


def _escaped(data: bytes) -> bytes:
    for raw, escaped in _LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def error_body(exc: ServiceError) -> dict[str, Any]:
    if isinstance(exc, RateLimited):
        return {"error": exc.detail, "quota": exc.quota}
    return {"error": exc.detail}


def error_response(exc: ServiceError) -> Response:
    """The error as Ollama answers one, with its status (but ``400`` for a request that does
    not fit, as Ollama, where the other surfaces say ``422``) and its headers."""
    status = 400 if isinstance(exc, InvalidRequest) else exc.status_code
    return Response(orjson.dumps(error_body(exc)), status_code=status, headers=exc.headers,
                    media_type="application/json")  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(kind: Kind, fields: Mapping[str, Any]) -> dict[str, Any]:
    """What a line carries of a token (or of a whole answer)."""
    text = fields.get("text", fields.get("response", ""))
    if kind == "generate":
        found = {"response": text}
        if fields.get("thinking"):
            found["thinking"] = fields["thinking"]
        return found
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if fields.get("thinking"):
        message["thinking"] = fields["thinking"]
    if fields.get("tool_calls"):
        message["tool_calls"] = fields["tool_calls"]
    return {"message": message}


class LineWire(Unqueued):
    """The ``Wire`` of one NDJSON stream."""

    def __init__(self, kind: Kind, model: str) -> None:
        self._kind = kind
        self._model = model
        self._splice: tuple[bytes, bytes, bytes] | None = None
        # a cached completion's replay is kept with the times of its first
        self.replay_key: tuple[str, ...] = ("ollama", kind, model)

    def _line(self, fields: Mapping[str, Any], created_at: str | None = None) -> bytes:
        line = {"model": self._model, "created_at": created_at or _now(), **fields}
        return dumps(line) + b"\n"

    def _token(self, payload: bytes, created_at: str) -> bytes:
        return self._line({**_text(self._kind, token_fields(payload)), "done": False},
                          created_at)  # fmt: skip

    def tokens(self, generation: str, first_index: int, payloads: Sequence[bytes]) -> bytes:
        now = _now()
        head, middle, tail = self._spliced()
        before = head + orjson.dumps(now) + middle
        lines = splice_texts(payloads, before, tail,
                             lambda payload: self._token(payload, now))  # fmt: skip
        return _escaped(lines)  # once for them all

    def _spliced(self) -> tuple[bytes, bytes, bytes]:
        """A text token's line around its time and its text, made once by ``_token`` itself."""
        if self._splice is None:
            whole = self._token(token_payload({"text": "\0"}), "\1")
            head, rest = whole.split(b'"\\u0001"')
            middle, tail = rest.split(SENTINEL)
            self._splice = (head, middle, tail)
        return self._splice

    def done(self, generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
        return self._line({**_text(self._kind, {}), "done": True, **_stats(stats)})

    def error(self, generation: str, exc: ServiceError) -> bytes:
        return dumps(error_body(exc)) + b"\n"


def _stats(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama's final statistics among ``fields`` (without what every line has anyway)."""
    return {k: v for k, v in fields.items() if k not in _NOT_STATS}


_NOT_STATS = frozenset({"model", "created_at", "response", "thinking", "message", "done", "cached"})


def answer(kind: Kind, whole: Answer) -> dict[str, Any]:
    """A whole answer as Ollama's non-streamed body."""
    fields = {"text": whole.text, "thinking": whole.thinking, "tool_calls": whole.tool_calls}
    return {"model": whole.model, "created_at": _now(), **_text(kind, fields),
            "done": True, **_stats(whole.stats)}  # fmt: skip
