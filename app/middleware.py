"""``RateLimitMiddleware``: pure ASGI (``BaseHTTPMiddleware`` would buffer streams), in front of
the requests that start generations: ``create_app`` puts it on the routes ``/v1/chats/generate``
(``GET``, ``POST``) and ``POST /v1/chats/generations``, cache hits included; a ``HEAD`` starts
nothing and passes. Nothing else is behind it: probes, events URLs, stop, docs, metrics.

A ``Last-Event-ID`` of ``<g>.done`` or ``<g>.error`` passes first (the route answers ``204``);
one naming a generation this service knows continues an admitted request, so it is neither
limited nor counted, unless the route then finds it cannot resume (another request's id): then
the route counts it with ``admit`` before starting anything. Limit headers go on every response
of a limited path, in ``http.response.start``, so a stream has them before its first byte.
Redis down: fail open (no headers), or ``503`` with ``RATE_LIMIT_FAIL_OPEN=false``.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import RateLimited, RateLimitUnavailable
from app.events import parse_event_id
from app.ratelimit import Decision, LimiterUnavailable, SlidingWindowLimiter, client_key
from app.responses import problem

LIMITED_METHODS = ("GET", "POST")
DECISION = "bib.rate_limit_decision"
DEFERRED = "bib.rate_limit_deferred"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, fail_open: bool) -> None:
        self.app = app
        self.fail_open = fail_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in LIMITED_METHODS:
            await self.app(scope, receive, send)
            return
        last = parse_event_id(Headers(scope=scope).get("last-event-id", ""))
        if last is not None and last[1] in ("done", "error"):
            await self.app(scope, receive, send)
            return
        if last is not None and await scope["state"]["generations"].knows(last[0]):
            scope[DEFERRED] = True
        else:
            try:
                await admit(scope, fail_open=self.fail_open)
            except (RateLimited, RateLimitUnavailable) as exc:
                await problem(exc, headers=exc.headers)(scope, receive, send)
                return

        async def send_with_limits(message: Message) -> None:
            decision: Decision | None = scope.get(DECISION)
            if message["type"] == "http.response.start" and decision is not None:
                headers = MutableHeaders(scope=message)
                for name, value in limit_headers(scope["state"]["limiter"], decision).items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_limits)


async def admit(scope: Scope, *, fail_open: bool) -> None:
    """Counts the request against its client's limit; raises ``RateLimited`` when over it."""
    limiter: SlidingWindowLimiter = scope["state"]["limiter"]
    client = scope.get("client")
    try:
        decision = await limiter.check(client_key(client[0] if client else None))
    except LimiterUnavailable:
        if fail_open:
            return
        raise RateLimitUnavailable("The rate limiter is unavailable; try again soon.") from None
    scope[DECISION] = decision
    if not decision.allowed:
        metrics.RATE_LIMITED.inc()
        raise RateLimited(
            f"Rate limit of {limiter.limit} requests per {limiter.window_seconds} seconds "
            f"exceeded; retry in {decision.retry_after_seconds} seconds.",
            headers={
                **limit_headers(limiter, decision),
                "Retry-After": str(decision.retry_after_seconds),
                "Cache-Control": "no-store",
            },
        )


def limit_headers(limiter: SlidingWindowLimiter, decision: Decision) -> dict[str, str]:
    """The IETF httpapi draft's ``RateLimit-Policy`` and ``RateLimit`` headers."""
    return {
        "RateLimit-Policy": f'"default";q={limiter.limit};w={limiter.window_seconds}',
        "RateLimit": f'"default";r={decision.remaining};t={decision.retry_after_seconds}',
    }
