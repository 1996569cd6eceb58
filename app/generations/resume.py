"""Where a client's stream stopped, and where it goes on: event ids and the resume rule.

A stream names each token event ``<generation>.<n>`` (``n`` counts from 0) and its end
``<generation>.done`` or ``<generation>.error``; a client that reconnects sends back the last
one it got (``Last-Event-ID``). The rule, for ``/v1/chats/generate`` and a generation's events
URL alike (``docs/api.md``, "Resume"):

- ``<generation>.<n>``: the stream goes on with token ``n + 1``;
- ``<generation>.done`` or ``.error``: the stream had ended, nothing follows (``204``, which
  stops an ``EventSource`` from reconnecting);
- anything else is no place in any generation: the stream starts from the beginning.

Whether the named generation still exists, and is the one asked for, is for the caller to find.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_EVENT_ID = re.compile(r"(g_[A-Za-z0-9_-]{22})\.(\d{1,9}|done|error)")


@dataclass(frozen=True, slots=True)
class Resumption:
    """A place a client named: the next token of ``generation`` it needs, or ``None`` when its
    stream had ended."""

    generation: str
    next_index: int | None

    @property
    def over(self) -> bool:
        return self.next_index is None


def resumption(last_event_id: str) -> Resumption | None:
    """The place ``last_event_id`` names, or ``None`` when it is not one of ours."""
    match = _EVENT_ID.fullmatch(last_event_id)
    if match is None:
        return None
    last = match[2]
    return Resumption(match[1], int(last) + 1 if last.isdigit() else None)


def token_ids(generation: str) -> bytes:
    """The part every token id of ``generation`` shares; each adds its index."""
    return f"{generation}.".encode()


def end_id(generation: str, how: Literal["done", "error"]) -> str:
    """The id of the event that ends the stream."""
    return f"{generation}.{how}"
