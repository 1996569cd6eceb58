"""Generations: one upstream generation, run as its own task, followed by its clients.

A ``Generation`` runs a ``TokenSource`` in a task of its own and keeps what it produced: each
token's JSON payload, then either Ollama's final statistics or the error that ended it. Clients
follow it from any token index, so the task that talks to Ollama never waits on a slow client,
and a client can wait for the first token without owning the upstream request. Choices made on
purpose: the upstream request is cancelled as soon as the last client leaves (nobody reads the
text, so no GPU time is spent on it); a generation that failed or was cancelled never counts
as finished.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from app import events
from app.errors import ServiceError
from app.schema import CompletionRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Token:
    """One upstream chunk worth sending: any of ``text``, ``thinking``, ``tool_calls``."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finished:
    """Ollama said ``done``; ``stats`` holds ``done_reason``, counts and durations."""

    stats: dict[str, Any]


Emit = Callable[[Token | Finished], None]


class TokenSource(Protocol):
    async def generate(self, request: CompletionRequest, emit: Emit) -> None:
        """Emits the request's tokens, then one ``Finished``; raises ``ServiceError``."""


class GenerationCancelled(ServiceError):
    status_code = 503
    code = "cancelled"


def new_generation_id() -> str:
    """``g_`` and 128 random bits, base64url: unguessable, so the id can authorise a stop."""
    return "g_" + secrets.token_urlsafe(16)


class Generation:
    """One upstream generation and everything it produced so far."""

    def __init__(self, request: CompletionRequest) -> None:
        self.id = new_generation_id()
        self.request = request
        self.payloads: list[bytes] = []
        self.stats: dict[str, Any] | None = None
        self.error: ServiceError | None = None
        self._changed = asyncio.Event()
        self._clients = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        return self.stats is not None or self.error is not None

    def start(self, source: TokenSource) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._produce(source), name=self.id)
        return self._task

    async def _produce(self, source: TokenSource) -> None:
        try:
            await source.generate(self.request, self._emit)
        except ServiceError as exc:
            self._end(error=exc)
        except asyncio.CancelledError:
            self._end(error=GenerationCancelled("The generation was stopped."))
            raise
        except Exception:
            logger.exception("generation %s failed", self.id)
            self._end(error=ServiceError("The generation failed inside the service."))

    def _emit(self, chunk: Token | Finished) -> None:
        if isinstance(chunk, Token):
            self.payloads.append(events.token_payload(chunk.fields))
            self._notify()
        else:
            self._end(stats=chunk.stats)

    def _end(
        self, *, stats: dict[str, Any] | None = None, error: ServiceError | None = None
    ) -> None:
        if not self.ended:
            self.stats, self.error = stats, error
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_beyond(self, index: int) -> None:
        """Returns once there is a token at ``index`` or the generation has ended."""
        while len(self.payloads) <= index and not self.ended:
            await self._changed.wait()

    async def wait_ended(self) -> None:
        while not self.ended:
            await self._changed.wait()

    def result(self, *, cached: bool) -> dict[str, Any]:
        """The whole completion as one JSON object, a superset of Ollama's final answer."""
        text: list[str] = []
        thinking: list[str] = []
        tool_calls: list[Any] = []
        for payload in self.payloads:
            fields = orjson.loads(payload)
            text.append(fields.get("text", ""))
            thinking.append(fields.get("thinking", ""))
            tool_calls.extend(fields.get("tool_calls", ()))
        body: dict[str, Any] = {"model": self.request.model, "response": "".join(text)}
        if any(thinking):
            body["thinking"] = "".join(thinking)
        if self.request.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": body["response"]}
            if "thinking" in body:
                message["thinking"] = body["thinking"]
            if tool_calls:
                message["tool_calls"] = tool_calls
            body["message"] = message
        return {**body, **(self.stats or {}), "done": True, "cached": cached}

    async def follow(self, index: int = 0, *, cached: bool = False) -> AsyncGenerator[bytes]:
        """The encoded events from token ``index`` on, ending with ``done`` or ``error``."""
        self._clients += 1
        try:
            while True:
                await self.wait_beyond(index)
                available = len(self.payloads)
                if available > index:
                    yield events.tokens(self.id, index, self.payloads[index:available])
                    index = available
                elif self.stats is not None:
                    yield events.done(self.id, self.stats, cached=cached)
                    return
                elif self.error is not None:
                    yield events.error(self.id, self.error)
                    return
        finally:
            self._clients -= 1
            if self._clients == 0:
                self.cancel()

    def cancel(self) -> None:
        """Stops the upstream request, if it still runs."""
        if not self.ended and self._task is not None:
            self._task.cancel()


class Generations:
    """Starts generations and cancels those still running when the service stops."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, request: CompletionRequest) -> Generation:
        generation = Generation(request)
        task = generation.start(self._source)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return generation

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
