"""``Answer``: a finished generation's whole answer, as every surface renders it when a client
asked for one JSON body instead of a stream.

It is neutral: the text, the thinking and the tool calls gathered from the token payloads, and
the engine's final statistics as they came (``done_reason``, counts, durations). Each surface
renders it in its own shape (``app.api.native.events``, ``app.api.openai.wire``,
``app.api.ollama.wire``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.generations.wire import token_fields
from app.upstream.engine import Kind


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    model: str  # as the engine's statistics name it, else as asked
    text: str
    thinking: str  # "" when the model did not think aloud
    tool_calls: list[Any]
    stats: dict[str, Any]
    cached: bool


def gather(kind: Kind, model: str, payloads: Sequence[bytes], stats: dict[str, Any], *,
           cached: bool) -> Answer:  # fmt: skip
    """The answer that ``payloads`` and ``stats`` make."""
    text: list[str] = []
    thinking: list[str] = []
    tool_calls: list[Any] = []
    for payload in payloads:
        fields = token_fields(payload)
        text.append(fields.get("text", ""))
        thinking.append(fields.get("thinking", ""))
        tool_calls.extend(fields.get("tool_calls", ()))
    return Answer(kind, stats.get("model", model), "".join(text), "".join(thinking), tool_calls,
                  stats, cached)  # fmt: skip
