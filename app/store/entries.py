"""The entries of a generation's Redis stream (``bib:{<g>}:events``), encoded and decoded here only.

    {"i": <first index>, "p": <payloads joined by LF>}   consecutive tokens (a batch)
    {"done": <Ollama's statistics as JSON>}                 the end of a finished generation
    {"error": <{"error": code, "detail": sentence}>}        the end of a failed one

Token payloads are one line of JSON each, so LF separates them. Decoding turns an error entry
back into the ``ServiceError`` it was, so nothing above this module handles error bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import ServiceError, error_for


@dataclass(frozen=True, slots=True)
class Batch:
    first_index: int
    payloads: list[bytes]


@dataclass(frozen=True, slots=True)
class Done:
    stats: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Failed:
    error: ServiceError


Entry = Batch | Done | Failed


def batch(first_index: int, payloads: Sequence[bytes]) -> dict[str, bytes]:
    return {"i": b"%d" % first_index, "p": b"\n".join(payloads)}


def done(stats: Mapping[str, Any]) -> dict[str, bytes]:
    return {"done": orjson.dumps(stats)}


def failed(error: ServiceError) -> dict[str, bytes]:
    return {"error": orjson.dumps({"error": error.code, "detail": error.detail})}


def decode(fields: Mapping[bytes, bytes]) -> Entry:
    """Raises ``ValueError`` for an entry that is none of the three."""
    try:
        if b"p" in fields:
            return Batch(int(fields[b"i"]), fields[b"p"].split(b"\n"))
        if b"done" in fields:
            return Done(orjson.loads(fields[b"done"]))
        data = orjson.loads(fields[b"error"])
        return Failed(error_for(data["error"], data["detail"]))
    except (KeyError, TypeError, ValueError) as exc:  # orjson's decode error is a ValueError
        raise ValueError(f"not a generation entry: {dict(fields)!r}") from exc
