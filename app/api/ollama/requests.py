"""Ollama's request bodies for ``/api/generate`` and ``/api/chat``, as the native request.

Their fields are the native request's, which are Ollama's own (``app.generations.request``), so
they go through the native checks. What the service cannot honour is refused with a ``400``
naming it, never ignored: ``suffix``, ``template``, ``context``, ``images`` outside messages
and ``logprobs`` on ``/api/generate``, ``logprobs`` on ``/api/chat``, and each endpoint's field
that belongs to the other. ``raw`` on ``/api/generate`` sends the prompt as it is, untemplated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from app.errors import InvalidRequest, Unsupported
from app.generations.request import CompletionRequest, Kind, parse_body, require_messages

_UNSUPPORTED = {
    "generate": ("suffix", "template", "context", "images", "logprobs", "top_logprobs"),
    "chat": ("logprobs", "top_logprobs"),
}


def parse(kind: Kind, data: Mapping[str, Any], default_model: str) -> CompletionRequest:
    """The body of ``/api/<kind>`` as the native request, refusing what cannot be honoured."""
    for name in _UNSUPPORTED[kind]:
        if data.get(name) not in (None, False, "", []):
            raise Unsupported(field=name)
    native = {k: v for k, v in data.items() if k not in (*_UNSUPPORTED[kind], "raw")}
    raw = data.get("raw", False)
    if kind == "chat" and "raw" in data:
        raise Unsupported("raw belongs to /api/generate.", "raw")
    if not isinstance(raw, bool):
        raise InvalidRequest("raw must be true or false.", {"raw": "must be true or false"})
    if kind == "generate" and "messages" in native:
        raise Unsupported("messages belong to /api/chat.", "messages")
    if kind == "chat":
        if "prompt" in native:
            raise Unsupported("prompt belongs to /api/generate.", "prompt")
        require_messages(native)
    return replace(parse_body(native, default_model), raw=raw)
