"""OpenAI Responses' wire format: the ``response`` object, its output items, and its stream of
events, and nothing else.

A stream is ``response.created`` and ``response.in_progress``, then each output item as it
grows (``response.output_item.added``; for a message ``response.content_part.added``,
``response.output_text.delta`` … ``.done``; for reasoning the summary's
``response.reasoning_summary_text.delta`` … ``.done``; for a call its arguments, or a custom
tool's input, in one delta; then ``response.output_item.done``, which carries the whole item,
as Codex reads it), and always one end: ``response.completed``, ``response.incomplete`` (the
length limit) or ``response.failed`` (an error, also when the engine ended abruptly). Every
event has a ``sequence_number`` from 0 that never skips, so a stream regenerated from the same
generation is the same events, and a client resumes after any of them (``skip_through``).

Ids come from the generation: ``resp_<generation>`` and, per output item, ``msg_``, ``rs_``,
``fc_``/``ctc_`` and ``call_`` with the item's place; so a cached answer keeps its ids, and so do
identical requests answered by one generation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from app.api.openai.wire import tool_calls as openai_tool_calls
from app.errors import RateLimited, ServiceError
from app.generations.answer import Answer
from app.generations.wire import Unqueued, text_literal, token_fields

MEDIA_TYPE = "text/event-stream"


def response_id(generation: str) -> str:
    return f"resp_{generation[2:]}"


def generation_of(response: str) -> str | None:
    """The generation a response id names, or ``None`` when it names none."""
    return f"g_{response[5:]}" if response.startswith("resp_") and len(response) == 27 else None


def usage(stats: Mapping[str, Any]) -> dict[str, Any]:
    prompt, output = int(stats.get("prompt_eval_count", 0)), int(stats.get("eval_count", 0))
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output}  # fmt: skip


def failure(exc: ServiceError) -> dict[str, Any]:
    """A failed response's ``error``: Codex waits and retries ``rate_limit_exceeded``, and
    retries ``server_error`` a few times."""
    code = "rate_limit_exceeded" if isinstance(exc, RateLimited) else "server_error"
    return {"code": code, "message": exc.detail}


def finished(base: Mapping[str, Any], output: list[dict[str, Any]],
             stats: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The response once its generation is done: ``completed``, or ``incomplete`` at the
    length limit."""
    incomplete = stats.get("done_reason") == "length"
    return {**base, "status": "incomplete" if incomplete else "completed", "output": output,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "usage": usage(stats)}  # fmt: skip


class Items:
    """How one response's calls come out: a custom tool's as ``custom_tool_call`` items, a
    namespaced function's with its namespace."""

    def __init__(self, custom_tools: frozenset[str], namespaces: Mapping[str, str]) -> None:
        self.custom_tools = custom_tools
        self.namespaces = dict(namespaces)

    def call(self, generation: str, index: int, call: Mapping[str, Any]) -> dict[str, Any]:
        """The item of the ``index``-th tool call (whole, ``completed``)."""
        (mapped,) = openai_tool_calls(generation, index, [call])
        name, arguments = mapped["function"]["name"], mapped["function"]["arguments"]
        call_id = f"call_{generation[2:]}_{index}"
        if name in self.custom_tools:
            given = (call.get("function") or {}).get("arguments")
            text = given.get("input", "") if isinstance(given, dict) else arguments
            return {"type": "custom_tool_call", "id": f"ctc_{generation[2:]}_{index}",
                    "call_id": call_id, "name": name, "input": str(text),
                    "status": "completed"}  # fmt: skip
        item = {"type": "function_call", "id": f"fc_{generation[2:]}_{index}",
                "call_id": call_id, "name": name, "arguments": arguments,
                "status": "completed"}  # fmt: skip
        if name in self.namespaces:
            item["namespace"] = self.namespaces[name]
        return item

    def output(self, generation: str, answer: Answer) -> list[dict[str, Any]]:
        """A whole answer's output items."""
        items: list[dict[str, Any]] = []
        if answer.thinking:
            items.append(_reasoning(f"rs_{generation[2:]}_{len(items)}", answer.thinking))
        if answer.text:
            items.append(_message(f"msg_{generation[2:]}_{len(items)}", answer.text))
        items += [self.call(generation, n, call) for n, call in enumerate(answer.tool_calls)]
        return items


def _reasoning(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}]}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(item_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": "completed",
        "role": "assistant",
        "content": [_text_part(text)],
    }


class EventWire(Unqueued):
    """The ``Wire`` of one Responses stream: ``base`` is the response object as created (its
    id, times and the request's fields); events up to ``skip_through`` are not sent (a resume
    after that sequence number)."""

    def __init__(self, base: Mapping[str, Any], items: Items, *, skip_through: int = -1) -> None:
        self._base = dict(base)
        self._items = items
        self._skip_through = skip_through
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any]] = []  # the items done so far
        self._open: str | None = None  # "message" or "reasoning", while one grows
        self._texts: list[bytes] = []  # the open item's text, as the contents of JSON strings
        self._calls = 0
        # a cached answer's replay is kept with the created_at of its first, as OpenAI's chunks
        # are (else a worker would build a hit's 15 KB anew once its kept keys have run out)
        unstamped = {name: value for name, value in base.items() if name != "created_at"}
        self.replay_key: tuple[str, ...] = ("responses", orjson.dumps(unstamped).decode(),
                                            str(skip_through))  # fmt: skip

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        sequence, self._sequence = self._sequence, self._sequence + 1
        if sequence <= self._skip_through:
            return b""
        data = orjson.dumps({"type": kind, "sequence_number": sequence, **fields})
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), data)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        created = {**self._base, "status": "in_progress"}
        return (self._event("response.created", {"response": created})
                + self._event("response.in_progress", {"response": created}))  # fmt: skip

    def _item_id(self, prefix: str) -> str:
        return f"{prefix}_{self._base['id'][5:]}_{len(self._output)}"

    def _grow(self, kind: str) -> bytes:
        """Opens a message or reasoning item unless one of that kind is open."""
        if self._open == kind:
            return b""
        opened = self._close()
        self._open = kind
        index = len(self._output)
        if kind == "message":
            item = {"type": "message", "id": self._item_id("msg"), "status": "in_progress",
                    "role": "assistant", "content": []}  # fmt: skip
            return (opened + self._event("response.output_item.added",
                                         {"output_index": index, "item": item})
                    + self._event("response.content_part.added", {
                        "item_id": item["id"], "output_index": index, "content_index": 0,
                        "part": _text_part("")}))  # fmt: skip
        item = {"type": "reasoning", "id": self._item_id("rs"), "summary": []}
        return (opened + self._event("response.output_item.added",
                                     {"output_index": index, "item": item})
                + self._event("response.reasoning_summary_part.added", {
                    "item_id": item["id"], "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""}}))  # fmt: skip

    def _close(self) -> bytes:
        """Ends the growing item: its whole text, then the item itself, which joins the
        output."""
        if self._open is None:
            return b""
        kind, self._open = self._open, None
        text: str = orjson.loads(b'"' + b"".join(self._texts) + b'"')
        self._texts = []
        index = len(self._output)
        if kind == "message":
            item_id = self._item_id("msg")
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            ended = (self._event("response.output_text.done",
                                 {**where, "text": text, "logprobs": []})
                     + self._event("response.content_part.done",
                                   {**where, "part": _text_part(text)}))  # fmt: skip
            item = _message(item_id, text)
        else:
            item_id = self._item_id("rs")
            where = {"item_id": item_id, "output_index": index, "summary_index": 0}
            ended = (self._event("response.reasoning_summary_text.done", {**where, "text": text})
                     + self._event("response.reasoning_summary_part.done", {
                         **where, "part": {"type": "summary_text", "text": text}}))  # fmt: skip
            item = _reasoning(item_id, text)
        self._output.append(item)
        return ended + self._event("response.output_item.done",
                                   {"output_index": index, "item": item})  # fmt: skip

    def _delta(self, kind: str, literal: bytes) -> bytes:
        """A delta of the growing item, its text the JSON literal as it came."""
        index = len(self._output)
        self._texts.append(literal[1:-1])
        if kind == "message":
            name, where = "response.output_text.delta", b'"content_index":0'
            item_id, tail = self._item_id("msg"), b',"logprobs":[]'
        else:
            name, where = "response.reasoning_summary_text.delta", b'"summary_index":0'
            item_id, tail = self._item_id("rs"), b""
        sequence, self._sequence = self._sequence, self._sequence + 1
        if sequence <= self._skip_through:
            return b""
        return (b'event: %s\ndata: {"type":"%s","sequence_number":%d,"item_id":"%s",'
                b'"output_index":%d,%s,"delta":%s%s}\n\n'
                % (name.encode(), name.encode(), sequence, item_id.encode(), index, where,
                   literal, tail))  # fmt: skip

    def tokens(self, generation: str, first_index: int, payloads: Sequence[bytes]) -> bytes:
        parts = [self._start()]
        for payload in payloads:
            literal = text_literal(payload)
            if literal is not None:
                parts += (self._grow("message"), self._delta("message", literal))
                continue
            fields = token_fields(payload)
            if fields.get("thinking"):
                parts += (self._grow("reasoning"),
                          self._delta("reasoning", orjson.dumps(fields["thinking"])))  # fmt: skip
            if fields.get("text"):
                parts += (self._grow("message"),
                          self._delta("message", orjson.dumps(fields["text"])))  # fmt: skip
            for call in fields.get("tool_calls", ()):
                parts.append(self._call(generation, call))
        return b"".join(parts)

    def _call(self, generation: str, call: Mapping[str, Any]) -> bytes:
        """A whole call: the item added, its arguments (or input) in one delta, done."""
        opened = self._close()
        item = self._items.call(generation, self._calls, call)
        self._calls += 1
        index = len(self._output)
        custom = item["type"] == "custom_tool_call"
        field, kind = ("input", "custom_tool_call_input") if custom else (
            "arguments", "function_call_arguments")  # fmt: skip
        where = {"item_id": item["id"], "output_index": index}
        self._output.append(item)
        return (opened
                + self._event("response.output_item.added", {
                    "output_index": index, "item": {**item, field: "", "status": "in_progress"}})
                + self._event(f"response.{kind}.delta", {**where, "delta": item[field]})
                + self._event(f"response.{kind}.done", {**where, field: item[field]})
                + self._event("response.output_item.done",
                              {"output_index": index, "item": item}))  # fmt: skip

    def done(self, generation: str, stats: Mapping[str, Any], *, cached: bool) -> bytes:
        start, closed = self._start(), self._close()
        response = finished(self._base, self._output, stats)
        name = f"response.{response['status']}"
        return start + closed + self._event(name, {"response": response})

    def error(self, generation: str, exc: ServiceError) -> bytes:
        """``response.failed``: every stream ends with one of its three ends."""
        start, closed = self._start(), self._close()
        response = {**self._base, "status": "failed", "output": self._output,
                    "error": failure(exc)}  # fmt: skip
        return start + closed + self._event("response.failed", {"response": response})
