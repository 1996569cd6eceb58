"""The SSE response: sse-starlette's ``EventSourceResponse`` with a cheaper send, and a client
that stops reading dropped quietly.

A send waits only when the socket's buffers are full, that is when the client has not read for a
while (on loopback, after several megabytes). After ``send_timeout`` seconds of that the client
is dropped, so its buffers are all the memory it can hold; it is logged as a warning, not as an
application error with a traceback, because it is the client's doing.

sse-starlette wraps every send in ``anyio.move_on_after(send_timeout)``, even without a timeout,
and on asyncio without sniffio each such scope looks up the async backend again; measured under
``scripts/bench`` that was the largest single cost of relaying a token. ``asyncio.timeout`` does
the same job (it is anyio's scope on this backend) without the lookups. The override is checked
by a test, so an sse-starlette upgrade that renames the hook fails loudly instead of silently.
The same goes for ``_ping``, replaced so that streams opened together ping at different times.
"""

from __future__ import annotations

import asyncio
import logging
import random

import anyio
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from app.events import PING

logger = logging.getLogger(__name__)


class EventStream(EventSourceResponse):
    async def _ping(self, send: Send) -> None:
        # Streams opened together would ping together, a burst every interval that delays
        # everything else (probes included); a random first delay spreads them. Then a ping
        # every interval, so no stream waits longer than that for one.
        delay = random.uniform(0, self.ping_interval)
        while self.active:
            await anyio.sleep(delay)
            delay = self.ping_interval
            async with self._send_lock:
                if self.active:
                    message = {"type": "http.response.body", "body": PING, "more_body": True}
                    await self._send_with_timeout(send, message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except* SendTimeoutError:  # from the stream, the ping, or both at once (a group)
            logger.warning("dropped a client that read nothing for %g s", self.send_timeout)

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise SendTimeoutError() from None
