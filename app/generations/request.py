"""The completion request: what a client may ask for, validated into a frozen value.

One table of fields serves both the JSON body of ``POST`` and the query string of ``GET`` (which
carries only ``model``, ``prompt``, ``system``, ``stream`` and ``cache``). Choices made on purpose:
unknown body fields are refused (a misplaced ``temperature`` should not be silently ignored),
while unknown query parameters are ignored (browsers and proxies add cache busters). Every
problem is reported at once, keyed by the field's path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidRequest
from app.settings import MODEL_NAME
from app.upstream.engine import Kind as Kind  # re-exported: a request is of a kind engines run

ROLES = ("system", "user", "assistant", "tool")
QUERY_FIELDS = ("model", "prompt", "system", "stream", "cache")
THINK_LEVELS = ("low", "medium", "high")  # Ollama's, for the models that take one (gpt-oss)


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated request; ``prompt`` and ``messages`` are mutually exclusive."""

    model: str
    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    system: str | None = None
    options: dict[str, Any] | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None  # or a level: THINK_LEVELS
    tools: tuple[dict[str, Any], ...] | None = None
    keep_alive: str | float | None = None
    stream: bool = True
    cache: bool = True
    raw: bool = False  # the prompt as the model's input, no template (Ollama's raw, OpenAI's text)
    band: str = "interactive"  # its place in the GPU queue (app.access.placement)
    session: str | None = None  # the conversation its client named (app.upstream.affinity)

    @property
    def kind(self) -> Kind:
        return "chat" if self.messages is not None else "generate"

    def content(self) -> dict[str, Any]:
        """What decides the model's answer: the request minus delivery choices."""
        content: dict[str, Any] = {"kind": self.kind, "model": self.model}
        if self.messages is not None:
            content["messages"] = list(self.messages)
        else:
            content["prompt"] = self.prompt
        optional = {
            "system": self.system,
            "options": self.options,
            "format": self.format,
            "think": self.think,
            "tools": list(self.tools) if self.tools is not None else None,
        }
        content.update((k, v) for k, v in optional.items() if v is not None)
        if self.raw:
            content["raw"] = True
        return content


def as_kind(name: str) -> Kind:
    """A request's kind, read back from Redis; raises ``ValueError`` for anything else."""
    if name not in ("generate", "chat"):
        raise ValueError(f"not a kind of request: {name!r}")
    return "chat" if name == "chat" else "generate"


def _string(value: object) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _think(value: object) -> str | None:
    if isinstance(value, bool) or value in THINK_LEVELS:
        return None
    return "must be true, false or one of " + ", ".join(THINK_LEVELS)


def _object(value: object) -> str | None:
    return None if isinstance(value, dict) else "must be an object"


def check_model(value: object) -> str | None:
    """What is wrong with ``value`` as a model name, if anything: on every surface, for
    completions and embeddings alike."""
    if isinstance(value, str) and MODEL_NAME.fullmatch(value):
        return None
    return "must be a model name like llama3.2 or qwen3:8b"


def _format(value: object) -> str | None:
    if value == "json" or isinstance(value, dict):
        return None
    return 'must be "json" or a JSON schema object'


def _keep_alive(value: object) -> str | None:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return None
    return 'must be a duration like "5m" or a number of seconds'


def _objects(value: object) -> str | None:
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return None
    return "must be a list of objects"


def _strings(value: object) -> str | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return None
    return "must be a list of strings"


def _role(value: object) -> str | None:
    return None if value in ROLES else "must be one of " + ", ".join(ROLES)


Check = Callable[[object], str | None]
_STRING: dict[str, Any] = {"type": "string"}
_BOOLEAN: dict[str, Any] = {"type": "boolean"}
_OBJECT: dict[str, Any] = {"type": "object"}
_OBJECTS: dict[str, Any] = {"type": "array", "items": _OBJECT}
_MESSAGE_FIELDS: dict[str, tuple[Check, dict[str, Any], str]] = {
    "role": (_role, {"type": "string", "enum": list(ROLES)}, "who speaks"),
    "content": (_string, _STRING, "the message text"),
    "images": (_strings, {"type": "array", "items": _STRING}, "base64 images"),
    "thinking": (_string, _STRING, "a thinking model's reasoning"),
    "tool_calls": (_objects, _OBJECTS, "tool calls an assistant made"),
    "tool_name": (_string, _STRING, "the tool a tool message answers for"),
}
# each field: how it is checked, its JSON schema (for /openapi.json), what it means
_FIELDS: dict[str, tuple[Check, dict[str, Any], str]] = {
    "model": (
        check_model,
        {"type": "string", "pattern": "^" + MODEL_NAME.pattern + "$"},
        "Ollama model name, or an alias of one (MODEL_ALIASES); DEFAULT_MODEL when absent",
    ),
    "prompt": (_string, _STRING, "single-turn prompt (Ollama /api/generate)"),
    "messages": (
        _objects,
        {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["role", "content"], "additionalProperties": False,
            "properties": {n: {**s, "description": d} for n, (_, s, d) in _MESSAGE_FIELDS.items()},
        }},
        "multi-turn chat (Ollama /api/chat)",
    ),
    "system": (_string, _STRING, "system prompt"),
    "options": (_object, _OBJECT, "Ollama options: temperature, top_p, seed, num_predict, stop"),
    "format": (
        _format,
        {"oneOf": [{"type": "string", "enum": ["json"]}, _OBJECT]},
        'structured output: "json" or a JSON schema',
    ),
    "think": (
        _think,
        {"oneOf": [_BOOLEAN, {"type": "string", "enum": list(THINK_LEVELS)}]},
        "let a thinking model think (a level for the models that take one)",
    ),
    "tools": (_objects, _OBJECTS, "tools a chat model may call (chat only)"),
    "keep_alive": (
        _keep_alive,
        {"oneOf": [_STRING, {"type": "number"}]},
        "how long Ollama keeps the model loaded; not part of the cache key",
    ),
    "stream": (_boolean, {**_BOOLEAN, "default": True}, "false: one JSON answer"),
    "cache": (_boolean, {**_BOOLEAN, "default": True}, "false: neither read nor write the cache"),
}  # fmt: skip


def request_schema() -> dict[str, Any]:
    """The JSON schema of the request body, from the same table that validates it."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: {**s, "description": d} for name, (_, s, d) in _FIELDS.items()},
        # exactly one of prompt and messages; tools only with messages
        "oneOf": [
            {"required": ["prompt"], "not": {"required": ["tools"]}},
            {"required": ["messages"]},
        ],
    }


def parse_body(data: Mapping[str, Any], default_model: str) -> CompletionRequest:
    """Validates a decoded JSON body (an object: ``app.api.pipeline`` reads only those)."""
    problems: dict[str, str] = {}
    for name, value in data.items():
        known = _FIELDS.get(name)
        reason = "is not a known field" if known is None else known[0](value)
        if reason:
            problems[name] = reason
    for index, message in enumerate(data.get("messages") or []):
        if isinstance(message, dict):
            _check_message(index, message, problems)
    if ("prompt" in data) == ("messages" in data):
        problems["prompt"] = "give exactly one of prompt and messages"
    elif data.get("messages") == []:
        problems["messages"] = "must not be empty"
    if "tools" in data and "messages" not in data:
        problems["tools"] = "needs messages (tools are a chat feature)"
    if problems:
        raise InvalidRequest.listing(problems)
    return _build(data, default_model)


def require_messages(data: Mapping[str, Any]) -> None:
    """The messages a chat endpoint cannot do without (OpenAI's, Ollama's): a non-empty list;
    what each message holds is ``parse_body``'s to check."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list.", {"messages": "is required"})


def parse_query(params: Mapping[str, str], default_model: str) -> CompletionRequest:
    """Validates the query string of a ``GET``; booleans are true/false/1/0."""
    data: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name in QUERY_FIELDS:
        if name not in params:
            continue
        raw = params[name]
        if name in ("stream", "cache"):
            flag = {"true": True, "1": True, "false": False, "0": False}.get(raw.lower())
            if flag is None:
                problems[name] = "must be true or false"
            data[name] = flag
        else:
            data[name] = raw
    if problems:
        raise InvalidRequest.listing(problems)
    return parse_body(data, default_model)


def _check_message(index: int, message: dict[str, Any], problems: dict[str, str]) -> None:
    for required in ("role", "content"):
        if required not in message:
            problems[f"messages[{index}].{required}"] = "is required"
    for name, value in message.items():
        known = _MESSAGE_FIELDS.get(name)
        reason = "is not a known field" if known is None else known[0](value)
        if reason:
            problems[f"messages[{index}].{name}"] = reason


def _build(data: Mapping[str, Any], default_model: str) -> CompletionRequest:
    messages = data.get("messages")
    tools = data.get("tools")
    return CompletionRequest(
        model=data.get("model", default_model),
        prompt=data.get("prompt"),
        messages=tuple(messages) if messages is not None else None,
        system=data.get("system"),
        options=data.get("options") or None,  # empty says nothing: the same content
        format=data.get("format"),
        think=data.get("think"),
        tools=tuple(tools) if tools else None,  # as the official clients send no tools: []
        keep_alive=data.get("keep_alive"),
        stream=data.get("stream", True),
        cache=data.get("cache", True),
    )
