"""Who is asking: ``AuthenticationMiddleware``, the middleware of every API route, finds the
request's API key (``Authorization: Bearer <key>``, what the OpenAI SDK sends, or ``X-API-Key``),
else the trusted identity header, else the client's address, and leaves an ``Identity`` in the scope
for the limits, the log line and the metrics.

``IDENTITY_HEADER`` (say ``X-OpenWebUI-User-Id``) names a header that a proxy in front sets to the
user it serves: believed only on a connection from a proxy in ``FORWARDED_ALLOW_IPS``
(``TrustedProxiesMiddleware`` notes that, before it takes the client's address from X-Forwarded-For
as uvicorn does), ignored from anyone else.

``AUTH=off`` (the default) reads no key: every client is its address, as before. ``optional``: a
valid key gets its own limits, no key the per-address defaults. ``required``: a request without a
valid key is ``401`` with ``WWW-Authenticate: Bearer``. In both, a key that is not valid
(unknown, revoked, expired) is ``401``: a typo should not quietly become anonymous. With Redis
down, a key this worker checked in the last ``api_keys.LOOKUP_SECONDS`` still counts; any other
is refused with ``503`` under ``required`` and treated as no key under ``optional``.

Probes, metrics, the docs, the playground and a generation's events and stop URLs (their ids
are unguessable: whoever holds one was given it) are not API routes and need no key, so that
an ``EventSource``, which cannot send headers, follows what a ``fetch`` with the key started.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.access.api_keys import LIMITS, ApiKey, ApiKeys
from app.access.quotas import Limits, client_key
from app.errors import AuthUnavailable, Unauthorized
from app.ops import metrics
from app.ops.request_log import facts
from app.store.client import RedisUnavailable

_IDENTITY = "bib.identity"
_TRUSTED = "bib.trusted_peer"
MAX_USER_CHARACTERS = 256  # a longer identity header is not believed


class TrustedProxiesMiddleware(ProxyHeadersMiddleware):
    """uvicorn's own X-Forwarded-For handling, run in the app (``python -m app`` turns uvicorn's
    off) so that it can note first whether the connection comes from a trusted proxy."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "http":
            peer = scope.get("client")
            scope[_TRUSTED] = peer is not None and peer[0] in self.trusted_hosts
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Identity:
    """``client``: whom the limits count (``key:<name>``, or the address); ``key``: its API key."""

    client: str
    key: ApiKey | None = None

    def limits(self, defaults: Limits) -> Limits:
        """The quotas of this identity: its key's own (``api_keys.LIMITS``), else ``defaults``."""
        if self.key is None or not self.key.limits:
            return defaults
        own = self.key.limits
        return replace(defaults, **{LIMITS[name]: own[name] for name in own if name in LIMITS})


def key_client(name: str) -> str:
    """Whom the limits count, and whose use is recorded, for the API key named ``name``."""
    return f"key:{name}"


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


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = scope["state"]["settings"]
        if scope["type"] == "http" and (settings.auth != "off" or settings.identity_header):
            scope[_IDENTITY] = await self._identify(scope, settings.auth, settings.identity_header,
                                                    scope["state"]["api_keys"])  # fmt: skip
        await self.app(scope, receive, send)

    @staticmethod
    async def _identify(scope: Scope, mode: str, header: str, api_keys: ApiKeys) -> Identity:
        headers = Headers(scope=scope)
        anonymous = _as_user(scope, headers, header) or identity(scope)
        key = presented_key(headers) if mode != "off" else None
        if key is None:
            if mode == "required":
                raise Unauthorized("An API key is required: Authorization: Bearer <key>.")
            return anonymous
        try:
            found = await api_keys.lookup(key)
        except RedisUnavailable:
            if mode == "required":
                raise AuthUnavailable("API keys cannot be checked now; try again soon.") from None
            return anonymous
        if found is None:
            raise Unauthorized("This API key is not valid (unknown or revoked).")
        if found.expired(time.time()):  # at its second, whatever a worker kept of it
            raise Unauthorized("This API key has expired.")
        facts(scope).key = found.name
        metrics.KEY_REQUESTS.labels(found.name).inc()
        return Identity(key_client(found.name), found)


def _as_user(scope: Scope, headers: Headers, header: str) -> Identity | None:
    """The identity the trusted proxy's header names, if it does (see the module docstring)."""
    user = headers.get(header, "") if header and scope.get(_TRUSTED) else ""
    if not user or len(user) > MAX_USER_CHARACTERS:
        return None
    facts(scope).user = user
    # hashed: any text is safe inside a Redis key's hash tag
    return Identity("user:" + hashlib.sha256(user.encode()).hexdigest()[:32])
