"""Anthropic's wire format: the ``Message`` of ``/v1/messages``, its stream events, and its
errors, and nothing else.

A stream is exactly Anthropic's events, each with its ``event:`` line (the SDKs and Claude Code
drop events without one): ``message_start``, then per content block ``content_block_start``,
``content_block_delta`` (``text_delta``, ``thinking_delta``, ``input_json_delta``) and
``content_block_stop``, then ``message_delta`` (the stop reason and usage) and
``message_stop``. The heartbeat is ``event: ping``, which every reader skips. The message
starts with the first event of the generation, whatever it is, so a replay from the cache is
the same bytes. An error after the stream began is ``event: error``, which the SDK raises.

Ids are the generation's (``msg_<generation>``, ``toolu_<generation>_<n>``), so a cached answer
keeps its id. Usage is the engine's real counts: ``input_tokens`` is known only at the end, so
``message_start`` says 0 and ``message_delta`` carries both (the SDK takes them from there).
Stop reasons: ``stop`` is ``end_turn``, ``length`` is ``max_tokens``, a tool call ``tool_use``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response

from app.errors import InvalidRequest, ServiceError
from app.generations.answer import Answer
from app.generations.wire import Unqueued, text_literal, token_fields

MEDIA_TYPE = "text/event-stream"
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
# our statuses as Anthropic's error types, which its SDKs and Claude Code act on
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
          503: "overloaded_error"}  # fmt: skip


def error_body(exc: ServiceError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}``."""
    kind = _TYPES.get(_status(exc), "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.detail}}


def _status(exc: ServiceError) -> int:
    """A request that does not fit is Anthropic's ``400``, where the native API says ``422``."""
    return 400 if isinstance(exc, InvalidRequest) else exc.status_code


def error_response(exc: ServiceError) -> Response:
    """The error as the Anthropic SDKs read one, with its status and headers."""
    return Response(orjson.dumps(error_body(exc)), status_code=_status(exc),
                    headers=exc.headers, media_type="application/json")  # fmt: skip


def message_id(generation: str) -> str:
    return f"msg_{generation[2:]}"


def stop_reason(stats: Mapping[str, Any], *, tool_use: bool) -> str:
    if tool_use:
        return "tool_use"
    return "max_tokens" if stats.get("done_reason") == "length" else "end_turn"


def usage(stats: Mapping[str, Any]) -> dict[str, int]:
    return {"input_tokens": int(stats.get("prompt_eval_count", 0)),
            "output_tokens": int(stats.get("eval_count", 0))}  # fmt: skip


def _tool_use(generation: str, index: int, call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):  # some engines send the arguments as JSON text
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            arguments = {"input": arguments}
    return {"type": "tool_use", "id": f"toolu_{generation[2:]}_{index}",
            "name": function.get("name", ""), "input": arguments}  # fmt: skip


def message(generation: str, answer: Answer, *, show_thinking: bool) -> dict[str, Any]:
    """A whole answer as Anthropic's ``Message``."""
    content: list[dict[str, Any]] = []
    if answer.thinking and show_thinking:
        content.append({"type": "thinking", "thinking": answer.thinking, "signature": ""})
    if answer.text:
        content.append({"type": "text", "text": answer.text})
    content += [_tool_use(generation, n, call) for n, call in enumerate(answer.tool_calls)]
    return {"id": message_id(generation), "type": "message", "role": "assistant",
            "model": answer.model, "content": content,
            "stop_reason": stop_reason(answer.stats, tool_use=bool(answer.tool_calls)),
            "stop_sequence": None, "usage": usage(answer.stats)}  # fmt: skip


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name, orjson.dumps(data))


class MessageWire(Unqueued):
    """The ``Wire`` of one Anthropic stream: it knows which content block is open."""

    def __init__(self, model: str, *, show_thinking: bool) -> None:
        self._model = model
        self._show_thinking = show_thinking
        self._started = False
        self._open: str | None = None  # the type of the content block open now
        self._index = -1  # of the last content block started
        self._tools = 0  # tool calls so far
        self.replay_key: tuple[str, ...] = ("anthropic", model, str(show_thinking))

    def _start(self, generation: str) -> bytes:
        """``message_start``, once, before whatever the stream says first."""
        if self._started:
            return b""
        self._started = True
        start: dict[str, Any] = {
            "id": message_id(generation), "type": "message", "role": "assistant",
            "model": self._model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        return _event(b"message_start", {"type": "message_start", "message": start})

    def _block(self, kind: str, block: dict[str, Any] | None = None) -> bytes:
        """Opens a ``kind`` block unless one is open (closing another kind first)."""
        if self._open == kind:
            return b""
        opened = self._close()
        self._index += 1
        self._open = kind
        started = block or {"type": kind, kind: ""}
        return opened + _event(b"content_block_start", {"type": "content_block_start",
                                                          "index": self._index,
                                                          "content_block": started})  # fmt: skip

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event(b"content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _text_delta(self, literal: bytes) -> bytes:
        """A text delta around the text's JSON literal, as it came: neither decoded nor encoded
        again (most tokens are text alone)."""
        return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                b'"delta":{"type":"text_delta","text":%s}}\n\n'
                % (self._index, literal))  # fmt: skip

    def tokens(self, generation: str, first_index: int, payloads: Sequence[bytes]) -> bytes:
        parts = [self._start(generation)]
        for payload in payloads:
            literal = text_literal(payload)
            if literal is not None:
                parts += (self._block("text", {"type": "text", "text": ""}),
                          self._text_delta(literal))  # fmt: skip
                continue
            fields = token_fields(payload)
            if fields.get("thinking") and self._show_thinking:
                parts.append(
                    self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                )
                delta = {"type": "thinking_delta", "thinking": fields["thinking"]}
                parts.append(
                    _event(
                        b"content_block_delta",
                        {"type": "content_block_delta", "index": self._index, "delta": delta},
                    )
                )
            if fields.get("text"):
                parts += (self._block("text", {"type": "text", "text": ""}),
                          self._text_delta(orjson.dumps(fields["text"])))  # fmt: skip
            for call in fields.get("tool_calls", ()):
                parts.append(self._tool_call(generation, call))
        return b"".join(parts)

    def _tool_call(self, generation: str, call: Mapping[str, Any]) -> bytes:
        """A whole tool call: its block, its input as one ``input_json_delta``, its end."""
        used = _tool_use(generation, self._tools, call)
        self._tools += 1
        opened = self._block("tool_use", {**used, "input": {}})
        delta = {"type": "input_json_delta", "partial_json": orjson.dumps(used["input"]).decode()}
        return (opened + _event(b"content_block_delta", {"type": "content_block_delta",
                                                         "index": self._index, "delta": delta})
                + self._close())  # fmt: skip

    def done(self, generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
        delta = {"stop_reason": stop_reason(stats, tool_use=self._tools > 0),
                 "stop_sequence": None}  # fmt: skip
        return (self._start(generation) + self._close()
                + _event(b"message_delta", {"type": "message_delta", "delta": delta,
                                            "usage": usage(stats)})
                + _event(b"message_stop", {"type": "message_stop"}))  # fmt: skip

    def error(self, generation: str, exc: ServiceError) -> bytes:
        """``event: error``, which the SDK raises; the stream ends after it."""
        return _event(b"error", error_body(exc))
