"""Graceful shutdown: on SIGTERM, drain for up to ``SHUTDOWN_GRACE`` seconds, then exit.

uvicorn alone stops listening at once and then waits forever for open streams. Instead, the
first SIGTERM starts a drain while the worker keeps serving: ``/readyz`` answers 503 (the load
balancer stops sending traffic), new generations are refused with 503, and open streams get the
grace to finish. Streams still open then end with an ``error`` event ``shutting_down`` without
an id, so an ``EventSource`` reconnects with the id of its last token and, on another replica,
starts afresh with ``"reset": true`` (this worker gives up its generations' claims and leases
so nothing waits for them). Streams that still have not ended (a client that does not read)
are stopped, then uvicorn's own handler runs and the process exits. A second signal stops
every stream and exits at once. The handler uvicorn installed is found the way sse-starlette
finds it (the bound method registered for SIGTERM), so this works with ``--workers`` too.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

import anyio

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any]
EXIT_AFTER_HALT_SECONDS = 2.0  # time for the farewell events to reach their clients


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Drain:
    """Counts open streams and runs the drain: ``refuse`` new work when it begins, ``halt``
    what is still open when the grace is over."""

    def __init__(
        self, grace_seconds: float, *, refuse: Callable[[], None], halt: Callable[[], None]
    ) -> None:
        self.grace_seconds = grace_seconds
        self.draining = False
        self._streams: set[Stoppable] = set()
        self._refuse = refuse
        self._halt = halt
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._exit: SignalHandler | None = None
        self._task: asyncio.Task[None] | None = None

    def install(self) -> bool:
        """Puts the drain in front of uvicorn's SIGTERM handler; False when not under uvicorn."""
        handler = signal.getsignal(signal.SIGTERM)
        if not callable(handler) or not hasattr(getattr(handler, "__self__", None), "should_exit"):
            return False
        self._exit = handler
        loop = asyncio.get_running_loop()

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.draining:
                loop.call_soon_threadsafe(self._stop_and_exit)  # a second signal: no more waiting
            else:
                loop.call_soon_threadsafe(self.begin)

        signal.signal(signal.SIGTERM, on_sigterm)
        return True

    def begin(self) -> None:
        if not self.draining:
            self.draining = True
            self._refuse()
            logger.warning("SIGTERM: draining %d open streams", self.open_streams)
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        with anyio.move_on_after(self.grace_seconds):
            await self._quiet.wait()
        if self.open_streams:
            logger.warning("ending %d streams still open after the grace", self.open_streams)
            self._halt()
            with anyio.move_on_after(EXIT_AFTER_HALT_SECONDS):
                await self._quiet.wait()
        self._stop_and_exit()

    def _stop_and_exit(self) -> None:
        for stream in list(self._streams):
            stream.stop()
        if self._exit is not None:
            self._exit(signal.SIGTERM, None)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def stream_opened(self, stream: Stoppable) -> None:
        self._streams.add(stream)
        self._quiet.clear()

    def stream_closed(self, stream: Stoppable) -> None:
        self._streams.discard(stream)
        if not self._streams:
            self._quiet.set()
