"""Deadlines for the bytes of a request: uvicorn's httptools protocol, with a bound on how long
a client may take to send a request's head (``REQUEST_HEAD_TIMEOUT``) and its body
(``REQUEST_BODY_TIMEOUT``).

uvicorn has no such deadline: a client that sends its head one line every two seconds, or half
a head and then nothing, held its connection for good (measured: both still open after 30 s).
The head's clock starts when the connection opens, or with the first byte of the next request
on a kept-alive one (uvicorn's keep-alive timeout closes it while it sends nothing at all); the
body's when the head is complete. Past either the client gets ``408`` and the connection is
closed (once the app has begun its answer, only closed), counted in
``bib_slow_requests_total{part}``. Nothing else is touched: a response as long as a stream and
the idling between requests are not timed here.

``python -m app`` runs uvicorn with this protocol; with uvicorn itself, pass
``--http app.deadlines:DeadlineProtocol``.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.ops import metrics
from app.settings import Settings

_SAID = b"The request came too slowly."
_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_SAID), _SAID))  # fmt: skip


@functools.cache
def _deadlines() -> tuple[float, float]:
    """This worker's deadlines for a head and a body, from its settings (read once)."""
    settings = Settings.from_environ(os.environ)
    return settings.request_head_timeout_seconds, settings.request_body_timeout_seconds


class DeadlineProtocol(HttpToolsProtocol):
    """Each worker's protocol: the deadlines come from the settings' variables, which
    ``python -m app`` has checked before any worker started."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_seconds, self._body_seconds = _deadlines()
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, part: Literal["head", "body"], seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow, part)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, part: Literal["head", "body"]) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        metrics.SLOW_REQUESTS.labels(part).inc()
        cycle = self.cycle if part == "body" else None
        if cycle is None or not cycle.response_started:
            self.transport.write(_TIMEOUT)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head", self._head_seconds)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request of a kept-alive connection
            self._arm("head", self._head_seconds)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body", self._body_seconds)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
