"""Response helpers: JSON bodies through orjson, and errors as RFC 9457 problem documents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from app.errors import ServiceError

NO_STORE = {"Cache-Control": "no-store"}


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
