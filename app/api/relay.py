"""The SSE response of a relay: the stream's own task sends the events, one helper task per
stream listens for the client leaving and sends the pings, and the worker's shutdown is one
listener for all streams (``app.ops.shutdown.Drain``), which stops those still open.

uvicorn speaks ASGI 2.3, where a send to a client that has gone does not raise, so something must
wait for ``http.disconnect``; the same wait, with the ping interval as its deadline, times the
pings. sse-starlette's ``EventSourceResponse`` runs a task group per response instead (the
stream, pings, a shutdown listener and a disconnect listener, each in its own task, with an
anyio lock and cancel scope around every send). Measured by ``scripts/bench`` on one worker
before and after this response replaced it, 5,000 streams joined on one generation held 45.1
KiB each with it and 23.5 KiB with this (an idle raw ASGI stream: 12.2 KiB). sse-starlette
remains the reference for the frame format (a test holds the native frames to its
``ServerSentEvent``).

A send waits only when the socket's buffers are full, that is when the client has not read for
a while (on loopback, after several megabytes). After ``send_timeout_seconds`` of that the
client is dropped, so its buffers are all the memory it can hold; it is logged as a warning,
not as an application error with a traceback, because it is the client's doing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Mapping
from typing import Literal

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.ops import metrics
from app.ops.shutdown import Drain

logger = logging.getLogger(__name__)

Stopped = Literal["left", "unread", "shutdown"]
_BODY_SEND = "bib.body_send"
# what every server-sent event stream answers with, whatever its surface
SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# an SSE comment line with no blank line after it: it joins the next block, which every reader
# ignores (``EventSource``, the ``openai`` SDK, fetch readers), and still keeps proxies from
# timing the connection out (``app.api.native.events`` says why there is no blank line)
SSE_PING = b": ping\n"


class BodyShortcutMiddleware:
    """The outermost of our middleware after the proxy handling (``app.main``), which does not
    touch sends: keeps the send it is given in the scope, so that a stream's body messages skip
    the layers inside it (Starlette's exception middleware and route wrapper, CORS, the request
    log). None of those reads a body message: they stamp or note the start of the response, or
    act when the app returns. At 100 relayed streams their wrappers took 9% of the worker's CPU
    (py-spy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_BODY_SEND] = send
        await self.app(scope, receive, send)


class _SendTimedOut(Exception):
    pass


class RelayResponse(Response):
    """Sends each chunk of ``body`` as it comes, ``ping`` every ``ping_seconds`` (the first at a
    random point of the first interval, so streams opened together do not ping together; no
    pings when ``ping`` is empty, as NDJSON has no form for them), and ends when ``body`` does,
    when the client leaves or when the worker stops it."""

    def __init__(
        self,
        body: AsyncGenerator[bytes],
        *,
        headers: Mapping[str, str],
        ping_seconds: float,
        send_timeout_seconds: float,
        drain: Drain,
        media_type: str = SSE_MEDIA_TYPE,
        ping: bytes = SSE_PING,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.media_type = media_type
        self.init_headers({**headers, "Connection": "keep-alive"})
        self._ping = ping
        self._body = body
        self._ping_seconds = ping_seconds
        self._send_timeout_seconds = send_timeout_seconds
        self._drain = drain
        self._task: asyncio.Task[object] | None = None
        self._stopped: Stopped | None = None

    def stop(self, why: Stopped = "shutdown") -> None:
        """Ends the stream from outside, at once; does nothing once it is ending anyway."""
        if self._task is not None and self._stopped is None:
            self._stopped = why
            self._task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._task = task = asyncio.current_task()
        assert task is not None
        self._drain.stream_opened(self)
        metrics.OPEN_STREAMS.inc()
        listener: asyncio.Task[None] | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            send = scope.get(_BODY_SEND, send)  # the start went through every layer; see above
            listener = asyncio.create_task(self._listen(receive, send))
            async for data in self._body:
                await self._send(send, data)
            listener.cancel()  # no ping after the last event
            await self._send(send, b"", more_body=False)
        except asyncio.CancelledError:
            if self._stopped is None:
                raise  # not ours: the server is cancelling the request
            task.uncancel()
        except _SendTimedOut:
            self._stopped = "unread"
        finally:
            self._task = None  # from here on nothing stops it
            if listener is not None:
                listener.cancel()
            await self._body.aclose()  # its cleanup, if a send or a stop left it suspended
            self._drain.stream_closed(self)
            metrics.OPEN_STREAMS.dec()
        if self._stopped == "unread":
            logger.warning("dropped a client that read nothing for %g s",
                           self._send_timeout_seconds)  # fmt: skip
        if self.background is not None:
            await self.background()

    async def _listen(self, receive: Receive, send: Send) -> None:
        delay = random.uniform(0, self._ping_seconds) if self._ping else None
        try:
            while True:
                try:
                    async with asyncio.timeout(delay):
                        message = await receive()
                except TimeoutError:
                    await self._send(send, self._ping)
                    delay = self._ping_seconds
                    continue
                if message["type"] == "http.disconnect":
                    self.stop("left")
                    return
        except _SendTimedOut:
            self.stop("unread")

    async def _send(self, send: Send, body: bytes, *, more_body: bool = True) -> None:
        try:
            async with asyncio.timeout(self._send_timeout_seconds):
                await send({"type": "http.response.body", "body": body, "more_body": more_body})
        except TimeoutError:
            raise _SendTimedOut() from None
