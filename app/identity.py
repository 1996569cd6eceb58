"""Who is asking: ``Authenticate``, the middleware of every API route, finds the request's API
key (``Authorization: Bearer <key>``, what the OpenAI SDK sends, or ``X-API-Key``) and leaves
an ``Identity`` in the scope for the limits, the log line and the metrics.

``AUTH=off`` (the default) reads no key: every client is its address, as before. ``optional``:
a valid key gets its own limits, no key the per-address defaults. ``required``: a request
without a valid key is ``401`` with ``WWW-Authenticate: Bearer``. In both, a key that is not
valid (unknown, revoked) is ``401``: a typo should not quietly become anonymous. With Redis
down, a key this worker checked in the last ``keyring.LOOKUP_SECONDS`` still counts; any other
is refused with ``503`` under ``required`` and treated as no key under ``optional``.

Probes, metrics, the docs, the playground and a generation's events and stop URLs (their ids
are unguessable: whoever holds one was given it) are not API routes and need no key, so that
an ``EventSource``, which cannot send headers, follows what a ``fetch`` with the key started.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics
from app.errors import AuthUnavailable, Unauthorized
from app.keyring import ApiKey, Keyring
from app.limiter import client_key
from app.redisclient import RedisUnavailable
from app.requestlog import facts

_IDENTITY = "bib.identity"


@dataclass(frozen=True, slots=True)
class Identity:
    """``client``: whom the limits count (``key:<name>``, or the address); ``key``: its API key."""

    client: str
    key: ApiKey | None = None

    def limit(self, name: str, default: int) -> int:
        """The key's own value of limit ``name`` (``keyring.LIMITS``), else ``default``."""
        if self.key is None:
            return default
        return self.key.limits.get(name, default)


def identity(scope: Scope) -> Identity:
    """This request's identity (its address when no middleware looked: unit tests, probes)."""
    found = scope.get(_IDENTITY)
    if found is None:
        client = scope.get("client")
        found = Identity(client_key(client[0] if client else None))
    assert isinstance(found, Identity)
    return found


def presented_key(headers: Headers) -> str | None:
    """The API key a request carries, if any."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key") or None


class Authenticate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        mode = state["settings"].auth
        if scope["type"] == "http" and mode != "off":
            scope[_IDENTITY] = await self._identify(scope, mode, state["keyring"])
        await self.app(scope, receive, send)

    @staticmethod
    async def _identify(scope: Scope, mode: str, keyring: Keyring) -> Identity:
        anonymous = identity(scope)
        key = presented_key(Headers(scope=scope))
        if key is None:
            if mode == "required":
                raise Unauthorized("An API key is required: Authorization: Bearer <key>.")
            return anonymous
        try:
            found = await keyring.lookup(key)
        except RedisUnavailable:
            if mode == "required":
                raise AuthUnavailable("API keys cannot be checked now; try again soon.") from None
            return anonymous
        if found is None:
            raise Unauthorized("This API key is not valid (unknown or revoked).")
        facts(scope).key = found.name
        metrics.KEY_REQUESTS.labels(found.name).inc()
        return Identity(f"key:{found.name}", found)
