"""The neutral wire: how a generation's events are handed to a surface's wire format, and the
payload codec every wire reads.

A generation keeps each token as its *payload*: the JSON of its fields (``text``, ``thinking``,
``tool_calls``), one line from orjson (CR and LF escaped inside strings), encoded once and kept
as long as the generation and its cached copies live, hence ``jsonbytes``. Every surface turns
payloads into its own bytes through a ``Wire``: the native server-sent events
(``app.api.native.events``), OpenAI's chunks, Ollama's lines. A feed hands its wire consecutive
payloads at once, so one batch is framed in one call for every follower, and a replay from the
cache is framed exactly as the live relay was.

Most tokens hold text alone, ``{"text":"…"}``; ``text_literal`` finds that text's JSON string
literal inside the payload, so that another wire can splice it into its own JSON frame
(``splice_texts``) instead of decoding and encoding it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import orjson

from app.errors import ServiceError
from app.ops import jsonbytes


class Wire(Protocol):
    """Encodes a generation's events for one surface (one instance per response when the
    format needs state of its own, like the OpenAI chunk's id). Wires with the same
    ``replay_key`` encode a cached completion to the same bytes, which a worker's copy keeps."""

    replay_key: tuple[str, ...]

    def tokens(self, generation: str, first_index: int, payloads: Sequence[bytes]) -> bytes:
        """Consecutive token events, numbered from ``first_index``."""

    def done(self, generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
        """The end of a completed generation, with the engine's statistics."""

    def error(self, generation: str, exc: ServiceError) -> bytes:
        """The end of a generation that failed after its response began."""

    def queued(self, generation: str, position: int) -> bytes:
        """The generation waits for a GPU slot behind ``position`` others (b"": not said)."""


class Unqueued:
    """For the wires whose clients know no place in a queue: they are told nothing."""

    def queued(self, generation: str, position: int) -> bytes:
        return b""


class Chunk(NamedTuple):
    """Encoded events, and how many token events they hold (for the request's log and metrics);
    ``queued``: a place in the GPU queue, which goes before the stream's first event."""

    data: bytes
    tokens: int
    queued: bool = False


def token_payload(fields: Mapping[str, Any]) -> bytes:
    """The payload of one token: its fields as one line of JSON, kept at its size."""
    return jsonbytes.dumps(fields)


def token_fields(payload: bytes) -> dict[str, Any]:
    """The fields of one token, back from ``token_payload``."""
    fields: dict[str, Any] = orjson.loads(payload)
    return fields


_TEXT_ONLY = b'{"text":'
SENTINEL = b'"\\u0000"'  # the literal of the text "\0", which wires split their frames at


def text_literal(payload: bytes) -> bytes | None:
    """The JSON string literal of a payload that holds only ``text`` (most tokens), else
    ``None``: orjson writes ``{"text": s}`` as ``{"text":`` + the literal + ``}``."""
    if payload.startswith(_TEXT_ONLY) and payload.find(b'","', len(_TEXT_ONLY)) == -1:
        return payload[len(_TEXT_ONLY) : -1]
    return None


def splice_texts(payloads: Sequence[bytes], before: bytes, after: bytes,
                 encode: Callable[[bytes], bytes]) -> bytes:  # fmt: skip
    """A wire's frames of ``payloads``: a text-only token's literal between ``before`` and
    ``after`` (that wire's frame of the text "\\0", split at ``SENTINEL``), any other token by
    ``encode``."""
    parts: list[bytes] = []
    for payload in payloads:  # most are text alone: spliced in, neither decoded nor encoded
        literal = text_literal(payload)
        if literal is None:
            parts.append(encode(payload))
        else:
            parts += (before, literal, after)
    return b"".join(parts)
