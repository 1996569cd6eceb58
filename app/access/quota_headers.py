"""``RateLimitMiddleware``: the quotas' headers on every response of a limited path, and the
last word on what an admitted request owes.

Pure ASGI (``BaseHTTPMiddleware`` would buffer streams). ``create_app`` puts it on the routes
that start generations or embed, on every surface; nothing else is behind it: probes, events
URLs, stop, docs, metrics. Whether a request is counted, and the ``429``, are admission's
(``app.access.admission``), which leaves the decision here with ``stamp``. The headers go out in
``http.response.start``: a stream has them before its first byte, and an error answered after
the request was counted has them too. Once the response is over, a concurrency slot that no
generation took (a body that did not parse, a client gone early) is given back.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.access.quotas import Account, Decision, Quota

_HEADERS = "bib.rate_limit_headers"
_ACCOUNT = "bib.account"


# each quota's policy name and its parameters beyond q (DESIGN.md names the requests' "default")
_POLICIES: dict[Quota, tuple[str, str]] = {
    "requests": ("default", ";w={w}"),
    "tokens": ("tokens", ';w={w};qu="tokens"'),
    "concurrency": ("concurrency", ';qu="concurrent-requests"'),
}


def limit_headers(decisions: Sequence[Decision]) -> dict[str, str]:
    """The IETF httpapi draft's ``RateLimit-Policy`` and ``RateLimit`` headers: one item per
    quota."""
    policies, states = [], []
    for d in decisions:
        name, more = _POLICIES[d.quota]
        policies.append(f'"{name}";q={d.limit}' + more.format(w=d.window_seconds))
        states.append(f'"{name}";r={d.remaining};t={d.retry_after_seconds}')
    return {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(states)}


def stamp(scope: Scope, headers: dict[str, str], account: Account | None) -> None:
    """Puts ``headers`` on the response of this request, whatever it turns out to be, and
    gives ``account`` back after it unless a generation holds it."""
    scope[_HEADERS] = headers
    scope[_ACCOUNT] = account


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

        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            account = scope.get(_ACCOUNT)
            if account is not None and not account.held:
                account.release()
