"""Redis commands issued in the same turn of the event loop, sent as one pipeline.

Thousands of streams each writing a few commands a second would otherwise each take a pooled
connection and a round trip of their own, and in redis-py a round trip costs far more CPU than
the command it carries (measured with ``scripts/bench``'s capacity and liveness sections). A
caller adds its commands
to the turn's pipeline with a function and awaits its own replies; the first caller of a turn
schedules the round trip for the turn's end (``call_soon``), so nothing waits on a timer, and a
caller that comes while a round trip is out goes into the next one. Callers that should share a
round trip arrange to be woken in the same turn (the keepers wake on a common clock).

Each component keeps its own ``SharedPipeline`` behind its own ``Guarded``, so an outage is
counted, logged and short-circuited per component as before, one gate slot per round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from app.store.client import Guarded, RedisClient, RedisUnavailable

logger = logging.getLogger(__name__)

Queue = Callable[[Any], object]  # adds commands to a redis-py (cluster) pipeline


class SharedPipeline:
    def __init__(self, redis: RedisClient, call: Guarded) -> None:
        self._redis = redis
        self._call = call
        self._turn: list[tuple[Queue, asyncio.Future[list[Any]] | None]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, queue: Queue) -> list[Any]:
        """The replies to the commands ``queue`` adds, in order. Raises ``RedisUnavailable``
        when the round trip failed or one of these commands did (its error is the cause)."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._add(queue, future)
        return await future

    def post(self, queue: Queue) -> None:
        """Sends the commands ``queue`` adds in this turn's round trip, waiting for nothing: for
        what may be lost with Redis (it is logged and counted like any failure)."""
        self._add(queue, None)

    def _add(self, queue: Queue, future: asyncio.Future[list[Any]] | None) -> None:
        if not self._turn:
            asyncio.get_running_loop().call_soon(self._send_turn)
        self._turn.append((queue, future))

    async def script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One call of a registered Lua script, by its SHA in the turn's round trip (each still
        atomic). Redis answers NOSCRIPT when it lost the script (a restart, a flush, a
        failover): this call then loads it and runs on its own, as redis-py's scripts do."""
        try:
            (reply,) = await self.run(  # by name: redis-py refuses evalsha in a cluster
                # pipeline, though a script whose keys share one slot runs fine in one
                lambda pipe: pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            )
        except RedisUnavailable as exc:
            if not isinstance(exc.__cause__, NoScriptError):
                raise
            reply = await self._call(lambda: script(keys=keys, args=args))
        return reply

    def _send_turn(self) -> None:
        turn, self._turn = self._turn, []
        task = asyncio.create_task(self._send(turn))
        self._sending.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._sending.discard)

    async def _send(self, turn: list[tuple[Queue, asyncio.Future[list[Any]] | None]]) -> None:
        spans: list[tuple[int, int]] = []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for queue, _ in turn:
                    start = len(pipe)
                    queue(pipe)
                    spans.append((start, len(pipe)))
                replies: list[Any] = await self._call(lambda: pipe.execute(raise_on_error=False))
        except BaseException as exc:  # no caller may wait forever, whatever went wrong
            if not isinstance(exc, RedisUnavailable | asyncio.CancelledError):
                logger.exception("a shared Redis round trip failed")  # a bug, not Redis
            failure = exc if isinstance(exc, RedisUnavailable) else RedisUnavailable(repr(exc))
            for _, future in turn:
                if future is not None and not future.done():
                    future.set_exception(failure)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (start, end), (_, future) in zip(spans, turn, strict=True):
            if future is None or future.done():  # nobody waits (posted, or its caller was
                continue  # cancelled): the commands ran all the same
            mine = replies[start:end]
            error = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if error is None:
                future.set_result(mine)
            else:
                failed = RedisUnavailable(str(error))
                failed.__cause__ = error
                future.set_exception(failed)
