"""Response helpers every layer's endpoints answer with: JSON bodies through orjson, the
``no-store`` header, and an error as an RFC 9457 problem document, the native shape (and that
of everything outside the compatible surfaces, whose shapes are their own:
``app.api.routing``).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from app.errors import ServiceError

NO_STORE = {"Cache-Control": "no-store"}


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem(exc: ServiceError) -> Response:
    """The error as ``application/problem+json``, with its own status and headers."""
    return Response(
        orjson.dumps(exc.problem()),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/problem+json",
    )
