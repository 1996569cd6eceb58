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

from app import events
from app.errors import ServiceError
from app.schema import Kind

MEDIA_TYPE = "application/x-ndjson"
RUNNING = "Ollama is running"


_LINE_BREAKS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"),
                (b"\xc2\x85", b"\\u0085"))  # fmt: skip


def dumps(value: Any) -> bytes:
    """One NDJSON line's JSON, with nothing ``str.splitlines`` breaks at."""
    data = orjson.dumps(value)
    for raw, escaped in _LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def error_body(exc: ServiceError) -> dict[str, Any]:
    return {"error": exc.detail}


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


class Stream:
    """The ``Wire`` of one NDJSON stream."""

    def __init__(self, kind: Kind, model: str) -> None:
        self._kind = kind
        self._model = model

    def _line(self, fields: Mapping[str, Any]) -> bytes:
        return dumps({"model": self._model, "created_at": _now(), **fields}) + b"\n"

    def tokens(self, generation: str, first_index: int, payloads: Sequence[bytes]) -> bytes:
        return b"".join(
            self._line({**_text(self._kind, events.token_fields(payload)), "done": False})
            for payload in payloads
        )

    def done(self, generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
        return self._line({**_text(self._kind, {}), "done": True, **_stats(stats)})

    def error(self, generation: str, exc: ServiceError) -> bytes:
        return dumps(error_body(exc)) + b"\n"


def _stats(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama's final statistics among ``fields`` (without what every line has anyway)."""
    return {k: v for k, v in fields.items() if k not in _NOT_STATS}


_NOT_STATS = frozenset({"model", "created_at", "response", "thinking", "message", "done", "cached"})


def answer(kind: Kind, whole: Mapping[str, Any]) -> dict[str, Any]:
    """A whole answer (``app.feeds.as_json``) as Ollama's non-streamed body."""
    message = whole.get("message") or {}
    fields = {**whole, "tool_calls": message.get("tool_calls")}
    return {"model": whole.get("model"), "created_at": _now(), **_text(kind, fields),
            "done": True, **_stats(whole)}  # fmt: skip
