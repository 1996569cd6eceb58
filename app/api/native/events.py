"""The native API's server-sent events, encoded to the exact bytes that go on the wire, and its
JSON answer.

Event names and payload shapes are fixed here and nowhere else (``docs/api.md``, "The
stream"). Every ``data`` line is one line of JSON from orjson, which escapes CR and LF inside
strings, so no payload ever needs the multi-line ``data:`` splitting of the SSE spec: a frame is a
plain concatenation, byte-identical to what ``sse_starlette.ServerSentEvent(...).encode()``
produces with ``sep="\\n"`` (a test holds us to that), and cheap enough to build once per batch
for every client. A token event's data is the token's payload itself, so a replay or a joined
client gets the very bytes the first one got.

Every blank line ends a block that has data. Readers of ``POST`` streams built on ``fetch``
(``@microsoft/fetch-event-source``, measured) hand *every* block to the page as a message, even
one of only ``retry:`` or a comment, and a page that parses each message's data as JSON crashes
on those. So ``retry:`` rides in the first block with data (the ``start`` event, or the first
event of a resumed stream), and the heartbeat is the relay's comment line with no blank line
after it (``app.api.relay.SSE_PING``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from app.errors import ServiceError
from app.generations import resume
from app.generations.answer import Answer

RETRY_MILLISECONDS = 2000
RETRY = b"retry: %d\n" % RETRY_MILLISECONDS  # a field of the block it precedes


def opening(generation: str, model: str, *, cached: bool, reset: bool = False) -> bytes:
    """The ``start`` event that names the generation, carrying the reconnect delay."""
    data: dict[str, Any] = {"generation": generation, "model": model, "cached": cached}
    if reset:
        data["reset"] = True
    return RETRY + _frame(None, b"start", orjson.dumps(data))


def tokens(generation: str, first_index: int, payloads: Iterable[bytes]) -> bytes:
    """Consecutive token events, numbered from ``first_index``."""
    prefix = resume.token_ids(generation)
    return b"".join(
        b"id: %s%d\nevent: token\ndata: %s\n\n" % (prefix, index, payload)
        for index, payload in enumerate(payloads, first_index)
    )


def done(generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
    """The final event, with the engine's statistics."""
    data = orjson.dumps({**stats, "cached": cached})
    return _frame(resume.end_id(generation, "done"), b"done", data)


def error(generation: str, exc: ServiceError) -> bytes:
    """The event that ends a stream which failed after it began. ``shutting_down`` has no id,
    so a reconnecting ``EventSource`` names its last token and resumes elsewhere."""
    data = orjson.dumps({"error": exc.code, "detail": exc.detail})
    if exc.code == "shutting_down":
        return _frame(None, b"error", data)
    return _frame(resume.end_id(generation, "error"), b"error", data)


def queued(generation: str, position: int) -> bytes:
    """While the generation waits for a GPU slot: how many generations will start before it
    (no id: a resume names tokens, not places in a queue)."""
    return _frame(None, b"queued", b'{"position":%d}' % position)


class NativeWire:
    """The native surface's ``Wire``: this module's frames; ``model``: the alias the client asked
    for, which its ``done`` event names instead of the engine's model."""

    tokens = staticmethod(tokens)
    error = staticmethod(error)
    queued = staticmethod(queued)

    def __init__(self, model: str | None = None) -> None:
        self._model = model
        self.replay_key: tuple[str, ...] = ("native",) if model is None else ("native", model)

    def done(self, generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
        return done(generation, stats if self._model is None else {**stats, "model": self._model},
                    cached=cached)  # fmt: skip


NATIVE = NativeWire()


def answer_body(answer: Answer) -> dict[str, Any]:
    """The whole answer as one JSON object: a superset of Ollama's final answer, with
    ``cached``."""
    body: dict[str, Any] = {"model": answer.model, "response": answer.text}
    if answer.thinking:
        body["thinking"] = answer.thinking
    if answer.kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.thinking:
            message["thinking"] = answer.thinking
        if answer.tool_calls:
            message["tool_calls"] = answer.tool_calls
        body["message"] = message
    return {**body, **answer.stats, "model": answer.model, "done": True, "cached": answer.cached}


def _frame(event_id: str | None, name: bytes, data: bytes) -> bytes:
    head = b"" if event_id is None else b"id: %s\n" % event_id.encode()
    return head + b"event: %s\ndata: %s\n\n" % (name, data)
