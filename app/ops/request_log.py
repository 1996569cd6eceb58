"""``RequestLogMiddleware``: a request id, one log line and the request metrics per request.

Outermost, so it sees every answer (429s and errors included) and, for a stream, logs when the
stream ends. ``X-Request-ID`` is taken from the client when it is a plain token of at most 128
characters, else generated, and echoed. Probes log at debug level only. Handlers add what only
they know (cache result, generation, first token, tokens) to ``facts(scope)``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ops import metrics

logger = logging.getLogger("bib.access")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
QUIET_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
_FACTS = "bib.facts"


@dataclass(slots=True)
class RequestFacts:
    started: float = field(default_factory=time.perf_counter)
    cache: str | None = None
    generation: str | None = None
    first_token_seconds: float | None = None
    tokens: int = 0
    key: str | None = None  # the API key's name (never the key)
    user: str | None = None  # what a trusted proxy's identity header said
    error: str | None = None  # the code of the service error it was answered with
    refused: str | None = None  # the quota that refused it (429)
    resumed: bool = False  # it continued a stream from Last-Event-ID
    produced_by: str | None = None  # the traceparent of the generation that made a hit or join

    def saw_tokens(self, count: int) -> None:
        if count and self.first_token_seconds is None:
            self.first_token_seconds = time.perf_counter() - self.started
            metrics.FIRST_TOKEN.observe(self.first_token_seconds)
        self.tokens += count
        metrics.TOKENS.inc(count)


def facts(scope: Scope) -> RequestFacts:
    """This request's facts (a fresh record when no middleware made one, as in unit tests)."""
    found: RequestFacts = scope.setdefault(_FACTS, RequestFacts())
    return found


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        record = scope[_FACTS] = RequestFacts()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.REQUESTS.labels(route, scope["method"], str(status)).inc()
            level = logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO
            if logger.isEnabledFor(level):
                self._log(level, scope, status, record, request_id)

    @staticmethod
    def _log(level: int, scope: Scope, status: int, record: RequestFacts, request_id: str) -> None:
        client = scope.get("client")
        ttft = record.first_token_seconds
        fields = {
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "client": client[0] if client else None,
            "duration_ms": round((time.perf_counter() - record.started) * 1000, 1),
            "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
            "tokens": record.tokens,
            "cache": record.cache,
            "generation": record.generation,
            "key": record.key,
            "user": record.user,
            "request_id": request_id,
        }
        logger.log(level, "request", extra={"fields": fields})
