"""The SSE response: sse-starlette's ``EventSourceResponse`` with a cheaper send.

sse-starlette wraps every send in ``anyio.move_on_after(send_timeout)``, even without a timeout,
and on asyncio without sniffio each such scope looks up the async backend again; measured under
``scripts/bench`` that was the largest single cost of relaying a token. ``asyncio.timeout`` does
the same job (it is anyio's scope on this backend) without the lookups. The override is checked
by a test, so an sse-starlette upgrade that renames the hook fails loudly instead of silently.
"""

from __future__ import annotations

import asyncio

from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Send


class EventStream(EventSourceResponse):
    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise SendTimeoutError() from None
