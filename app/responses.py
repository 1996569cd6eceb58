"""Response helpers: JSON bodies through orjson, and errors in the shape of the API asked.

Which API a path belongs to is decided here and nowhere else: the OpenAI-compatible paths
answer errors as OpenAI's ``{"error": {...}}`` (``app.api.openai.wire``), the Ollama-compatible ones
(``/`` and ``/api/...``) as Ollama's ``{"error": "..."}``, with Ollama's 400 for a request that
does not fit (422 elsewhere), and everything else as an RFC 9457 problem document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from app.api.ollama import wire as ollama_wire
from app.api.openai import wire as openai_wire
from app.errors import InvalidRequest, ServiceError

NO_STORE = {"Cache-Control": "no-store"}
OPENAI_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem(exc: ServiceError, headers: Mapping[str, str] | None = None) -> Response:
    """The error as ``application/problem+json`` with its own status."""
    return Response(
        orjson.dumps(exc.problem()),
        status_code=exc.status_code,
        headers=headers,
        media_type="application/problem+json",
    )


def error_response(path: str, exc: ServiceError, headers: Mapping[str, str] | None = None
                   ) -> Response:  # fmt: skip
    """The error answered on ``path``, in that path's API's shape."""
    if path in OPENAI_PATHS:
        return Response(orjson.dumps(openai_wire.error_body(exc)), status_code=exc.status_code,
                        headers=headers, media_type="application/json")  # fmt: skip
    if path == "/" or path.startswith("/api/"):
        status = 400 if isinstance(exc, InvalidRequest) else exc.status_code
        return Response(orjson.dumps(ollama_wire.error_body(exc)), status_code=status,
                        headers=headers, media_type="application/json")  # fmt: skip
    return problem(exc, headers)
