"""``RateLimitMiddleware``: the limit's headers on every response of a limited path.

Pure ASGI (``BaseHTTPMiddleware`` would buffer streams). ``create_app`` puts it on the routes
that start generations (``/v1/chats/generate``, ``POST /v1/chats/generations``); nothing else
is behind it: probes, events URLs, stop, docs, metrics. Whether a request is counted, and the
``429``, are admission's (``app.admission``), which leaves the decision's headers here with
``stamp``. They go out in ``http.response.start``: a stream has them before its first byte, and
an error answered after the request was counted has them too.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.limiter import Decision

_HEADERS = "bib.rate_limit_headers"


def limit_headers(limit: int, window_seconds: int, decision: Decision) -> dict[str, str]:
    """The IETF httpapi draft's ``RateLimit-Policy`` and ``RateLimit`` headers."""
    return {
        "RateLimit-Policy": f'"default";q={limit};w={window_seconds}',
        "RateLimit": f'"default";r={decision.remaining};t={decision.retry_after_seconds}',
    }


def stamp(scope: Scope, headers: dict[str, str]) -> None:
    """Puts ``headers`` on the response of this request, whatever it turns out to be."""
    scope[_HEADERS] = headers


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and _HEADERS in scope:
                MutableHeaders(scope=message).update(scope[_HEADERS])
            await send(message)

        await self.app(scope, receive, send_with_limits)
