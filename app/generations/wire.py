"""The server-sent events of a generation, encoded to the exact bytes that go on the wire.

Event names and payload shapes are fixed here and nowhere else. Every ``data`` line is one line
of JSON from orjson, which escapes CR and LF inside strings, so no payload ever needs the
multi-line ``data:`` splitting of the SSE spec: a frame is a plain concatenation, byte-identical
to what ``sse_starlette.ServerSentEvent(...).encode()`` produces with ``sep="\\n"`` (a test holds
us to that), and cheap enough to build once per token for every client. Token payloads are kept
as their JSON bytes, so a replay or a joined client gets the very bytes the first one got.

Every blank line ends a block that has data. Readers of ``POST`` streams built on ``fetch``
(``@microsoft/fetch-event-source``, measured) hand *every* block to the page as a message,
even one of only ``retry:`` or a comment, and a page that parses each message's data as JSON
crashes on those. So ``retry:`` rides in the first block with data (the ``start`` event, or the
first event of a resumed stream), and a heartbeat is a comment line with no blank line after
it: it becomes part of the next block, which every reader ignores (``EventSource``, the
``openai`` SDK, fetch readers), and still keeps proxies from timing the connection out.

``Wire`` is what a feed needs of a wire format to encode a generation's events; ``NATIVE`` is
this module's, and the other surfaces bring their own (``app.api.openai.wire``,
``app.api.ollama.wire``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from app.errors import ServiceError
from app.ops import jsonbytes

RETRY_MILLISECONDS = 2000
RETRY = b"retry: %d\n" % RETRY_MILLISECONDS  # a field of the block it precedes
PING = b": ping\n"  # no blank line: see above
_EVENT_ID = re.compile(r"(g_[A-Za-z0-9_-]{22})\.(\d{1,9}|done|error)")


class Wire(Protocol):
    """Encodes a generation's events for one surface (one instance per response when the
    format needs state of its own, like the OpenAI chunk's id). Wires with the same
    ``replay_key`` encode a cached completion to the same bytes, which a worker's copy keeps."""

    replay_key: tuple[str, ...]

    def tokens(self, generation: str, first_index: int, payloads: Sequence[bytes]) -> bytes:
        """Consecutive token events, numbered from ``first_index``."""

    def done(self, generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
        """The end of a completed generation, with Ollama's statistics."""

    def error(self, generation: str, exc: ServiceError) -> bytes:
        """The end of a generation that failed after its response began."""

    def queued(self, generation: str, position: int) -> bytes:
        """The generation waits for a GPU slot behind ``position`` others (b"": not said)."""


class Chunk(NamedTuple):
    """Encoded events, and how many token events they hold (for the request's log and metrics);
    ``queued``: a place in the GPU queue, which goes before the stream's ``start``."""

    data: bytes
    tokens: int
    queued: bool = False


@dataclass(frozen=True, slots=True)
class EventId:
    """An event id a client sent back (``Last-Event-ID``): ``index`` of its last token, or
    ``None`` when its stream had ended (``<generation>.done`` or ``.error``)."""

    generation: str
    index: int | None


def parse_event_id(value: str) -> EventId | None:
    """The event id in ``value``, or ``None`` when it is not one of ours."""
    match = _EVENT_ID.fullmatch(value)
    if match is None:
        return None
    return EventId(match[1], int(match[2]) if match[2].isdigit() else None)


def token_payload(fields: Mapping[str, Any]) -> bytes:
    """The JSON data of one token event: ``text``, ``thinking`` and/or ``tool_calls``; kept
    as long as the generation, hence ``jsonbytes``."""
    return jsonbytes.dumps(fields)


def token_fields(payload: bytes) -> dict[str, Any]:
    """The fields of one token event's data, back from ``token_payload``."""
    fields: dict[str, Any] = orjson.loads(payload)
    return fields


_TEXT_ONLY = b'{"text":'
SENTINEL = b'"\\u0000"'  # the literal of the text "\0", which wires split their frames at


def text_literal(payload: bytes) -> bytes | None:
    """The JSON string literal of a payload that holds only ``text`` (most tokens), else
    ``None``: orjson writes ``{"text": s}`` as ``{"text":`` + the literal + ``}``, so another
    wire can splice it into its own JSON without decoding and encoding it again."""
    if payload.startswith(_TEXT_ONLY) and payload.find(b'","', len(_TEXT_ONLY)) == -1:
        return payload[len(_TEXT_ONLY) : -1]
    return None


def splice_texts(payloads: Sequence[bytes], before: bytes, after: bytes,
                 encode: Callable[[bytes], bytes]) -> bytes:  # fmt: skip
    """Another wire's frames of ``payloads``: a text-only token's literal between ``before``
    and ``after`` (that wire's frame split at ``SENTINEL``), any other token by ``encode``."""
    parts: list[bytes] = []
    for payload in payloads:  # most are text alone: spliced in, neither decoded nor encoded
        literal = text_literal(payload)
        if literal is None:
            parts.append(encode(payload))
        else:
            parts += (before, literal, after)
    return b"".join(parts)


def opening(generation: str, model: str, *, cached: bool, reset: bool = False) -> bytes:
    """The ``start`` event that names the generation, carrying the reconnect delay."""
    data: dict[str, Any] = {"generation": generation, "model": model, "cached": cached}
    if reset:
        data["reset"] = True
    return RETRY + _frame(None, b"start", orjson.dumps(data))


def tokens(generation: str, first_index: int, payloads: Iterable[bytes]) -> bytes:
    """Consecutive token events, numbered from ``first_index``."""
    prefix = f"id: {generation}.".encode()
    return b"".join(
        b"%s%d\nevent: token\ndata: %s\n\n" % (prefix, index, payload)
        for index, payload in enumerate(payloads, first_index)
    )


def done(generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
    """The final event, with Ollama's statistics."""
    return _frame(f"{generation}.done", b"done", orjson.dumps({**stats, "cached": cached}))


def error(generation: str, exc: ServiceError) -> bytes:
    """The event that ends a stream which failed after it began. ``shutting_down`` has no id,
    so a reconnecting ``EventSource`` names its last token and resumes elsewhere."""
    if exc.code == "shutting_down":
        return _frame(None, b"error", _error_data(exc))
    return _frame(f"{generation}.error", b"error", _error_data(exc))


def queued(generation: str, position: int) -> bytes:
    """While the generation waits for a GPU slot: how many generations will start before it
    (no id: a resume names tokens, not places in a queue)."""
    return _frame(None, b"queued", b'{"position":%d}' % position)


def unsaid(generation: str, position: int) -> bytes:
    """The compatible wires' queue position: nothing, their clients know no such event."""
    return b""


def _error_data(exc: ServiceError) -> bytes:
    """The JSON data of an ``error`` event."""
    return orjson.dumps({"error": exc.code, "detail": exc.detail})


class _Native:
    """The native surface's ``Wire``: this module's frames."""

    replay_key: tuple[str, ...] = ("native",)

    tokens = staticmethod(tokens)
    done = staticmethod(done)
    error = staticmethod(error)
    queued = staticmethod(queued)


NATIVE: Wire = _Native()


def _frame(event_id: str | None, name: bytes, data: bytes) -> bytes:
    head = b"" if event_id is None else b"id: %s\n" % event_id.encode()
    return head + b"event: %s\ndata: %s\n\n" % (name, data)
