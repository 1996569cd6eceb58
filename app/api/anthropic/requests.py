"""Anthropic Messages request bodies, mapped onto the native request field by field.

==========================================  =================================================
Messages                                     native (``app.generations.request``)
==========================================  =================================================
``model``                                    ``model`` (``DEFAULT_MODEL`` when absent)
``max_tokens`` (required, > 0)               ``options.num_predict``
``system`` (a string or text blocks)         a first ``system`` message
``messages``: ``text`` blocks                ``content`` (blocks joined with newlines)
  ``image`` (base64)                         ``images``
  ``tool_use`` (assistant)                   ``tool_calls`` (``input`` as the arguments)
  ``tool_result`` (user)                     a ``tool`` message before the user's text,
                                             ``tool_name`` from the matching ``tool_use``
  ``thinking`` (assistant)                   ``thinking``; ``redacted_thinking``: dropped
  ``role: "system"`` (Claude Code sends it)  a ``system`` message
``temperature``, ``top_p``, ``top_k``        ``options`` of the same names
``stop_sequences``                           ``options.stop``
``tools`` (``name``, ``description``,        ``tools`` as functions (``input_schema`` is their
``input_schema``)                            ``parameters``)
``tool_choice``                              ``auto`` keeps the tools, ``none`` sends none;
                                             ``any`` and a named tool cannot be honoured by
                                             Ollama's engines: ``400``
``thinking``                                 ``enabled`` or ``adaptive``: ``think`` where the
                                             model can think (``app.api.anthropic.routes``),
                                             ``disabled``: ``think: false``; ``budget_tokens``
                                             accepted; ``display: "omitted"``: no thinking in
                                             the answer
``stream``                                   delivery only (default: not streamed)
==========================================  =================================================

Accepted and ignored, since they only tune Anthropic's own service: ``metadata``,
``service_tier``, ``context_management``, ``output_config`` (also on a message),
``cache_control`` (on blocks and tools), ``defer_loading`` and ``type: "custom"`` (on tools),
``is_error`` and ``citations`` (on blocks). Anything else that would change the answer is
``Unsupported`` (``400``), naming the field: a server tool, ``mcp_servers``, ``container``,
an image from a URL, a document, ``disable_parallel_tool_use``. A value of the wrong type is
the native ``InvalidRequest`` (answered ``400``, as Anthropic does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import InvalidRequest, Unsupported
from app.generations.request import CompletionRequest, parse_body, require_messages

Thinking = Literal["on", "off"] | None  # None: not asked, the model's own default

IGNORED = frozenset({"metadata", "service_tier", "context_management", "output_config"})
_KNOWN = frozenset({"model", "max_tokens", "messages", "system", "stream", "temperature",
                    "top_p", "top_k", "stop_sequences", "tools", "tool_choice", "thinking",
                    *IGNORED})  # fmt: skip
_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
            "max_tokens": "num_predict"}  # fmt: skip
_BLOCK_IGNORED = frozenset({"cache_control", "citations"})


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A Messages body, mapped: the native fields (without ``think``), and what only the
    answer's shape needs."""

    native: dict[str, Any]
    thinking: Thinking
    show_thinking: bool  # false with ``display: "omitted"``
    stream: bool

    def completion(self, default_model: str, *, can_think: bool | None) -> CompletionRequest:
        """The native request, thinking only where the model can (``can_think`` from its
        host's capabilities; ``None``: unknown, asked as given)."""
        native = dict(self.native)
        if self.thinking is not None and can_think is not False:
            native["think"] = self.thinking == "on"
        return parse_body(native, default_model)


def parse(data: Mapping[str, Any], *, counting: bool = False) -> MessagesRequest:
    """A ``/v1/messages`` body (``counting``: a ``count_tokens`` one, without ``max_tokens``)."""
    for name in data:
        if name not in _KNOWN:
            raise Unsupported(field=name)
    native: dict[str, Any] = {}
    options: dict[str, Any] = {}
    max_tokens = data.get("max_tokens")
    if not counting and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                         or max_tokens < 1):  # fmt: skip
        raise InvalidRequest("max_tokens must be an integer above 0.",
                             {"max_tokens": "is required, above 0"})  # fmt: skip
    for name, option in _OPTIONS.items():
        if data.get(name) is not None and not (counting and name == "max_tokens"):
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidRequest(f"{name} must be a number.", {name: "must be a number"})
            options[option] = value
    stops = data.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequest("stop_sequences must be a list of strings.",
                                 {"stop_sequences": "must be a list of strings"})  # fmt: skip
        if stops:
            options["stop"] = stops
    if options:
        native["options"] = options
    if data.get("model") is not None:
        native["model"] = data["model"]
    require_messages(data)
    native["messages"] = [*_system(data.get("system")), *_messages(data["messages"])]
    choice = data.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "none", "any", "tool"):
        raise InvalidRequest("tool_choice must be auto, none, any or a tool.",
                             {"tool_choice": "is not a known choice"})  # fmt: skip
    if kind in ("any", "tool"):
        raise Unsupported(f'tool_choice "{kind}" cannot be honoured: the engine chooses.',
                          "tool_choice")  # fmt: skip
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use"):
        raise Unsupported("disable_parallel_tool_use cannot be honoured.",
                          "tool_choice.disable_parallel_tool_use")  # fmt: skip
    tools = _tools(data.get("tools"))
    if tools and kind == "auto":
        native["tools"] = tools
    thinking, show = _thinking(data.get("thinking"))
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be true or false.", {"stream": "must be a boolean"})
    native["stream"] = stream
    return MessagesRequest(native, thinking, show, stream)


def _thinking(value: object) -> tuple[Thinking, bool]:
    if value is None:
        return None, True
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "disabled":
        return "off", True
    if kind in ("enabled", "adaptive"):
        assert isinstance(value, dict)
        return "on", value.get("display") != "omitted"
    raise InvalidRequest("thinking must be enabled, adaptive or disabled.",
                         {"thinking": "is not a known kind"})  # fmt: skip


def _system(value: object) -> list[dict[str, Any]]:
    if value is None or value == "" or value == []:
        return []
    return [{"role": "system", "content": _text(value, "system")}]


def _text(value: object, where: str) -> str:
    """A string, or text blocks joined with newlines."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be a string or a list of text blocks.",
                             {where: "must be text"})  # fmt: skip
    texts = []
    for index, block in enumerate(value):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text" or not isinstance(block.get("text"), str):
            raise Unsupported(f"{where}[{index}] must be a text block here.",
                              f"{where}[{index}]")  # fmt: skip
        texts.append(block["text"])
    return "\n".join(texts)


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool_use id -> the tool it called
    mapped: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object.", {where: "must be an object"})
        for name in message:
            if name not in ("role", "content", "output_config"):
                raise Unsupported(field=f"{where}.{name}")
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise InvalidRequest(f"{where}.role must be user, assistant or system.",
                                 {f"{where}.role": "is not a known role"})  # fmt: skip
        content = message.get("content")
        if role == "system":
            mapped.append({"role": "system", "content": _text(content, f"{where}.content")})
            continue
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise InvalidRequest(f"{where}.content must be a string or a list of blocks.",
                                 {f"{where}.content": "must be text or blocks"})  # fmt: skip
        mapped += _blocks(role, blocks, names, where)
    return mapped


def _blocks(role: str, blocks: list[Any], names: dict[str, str], where: str
            ) -> list[dict[str, Any]]:  # fmt: skip
    """One message's blocks as native messages: its tool results first (each a ``tool``
    message), then the rest as one message of its role."""
    results: list[dict[str, Any]] = []
    texts: list[str] = []
    message: dict[str, Any] = {"role": role}
    for index, block in enumerate(blocks):
        at = f"{where}.content[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            _only(block, {"type", "text"}, at)
            texts.append(block["text"])
        elif kind == "image":
            _only(block, {"type", "source"}, at)
            message.setdefault("images", []).append(_image(block.get("source"), at))
        elif kind == "tool_use" and role == "assistant":
            _only(block, {"type", "id", "name", "input"}, at)
            names[str(block.get("id"))] = str(block.get("name", ""))
            call = {"name": block.get("name", ""), "arguments": block.get("input") or {}}
            message.setdefault("tool_calls", []).append({"function": call})
        elif kind == "tool_result" and role == "user":
            _only(block, {"type", "tool_use_id", "content", "is_error"}, at)
            results.append(_result(block, names, at))
        elif kind == "thinking" and role == "assistant":
            _only(block, {"type", "thinking", "signature"}, at)
            message["thinking"] = message.get("thinking", "") + str(block.get("thinking", ""))
        elif kind == "redacted_thinking" and role == "assistant":
            continue  # opaque to any engine but Anthropic's
        else:
            raise Unsupported(f"{at}: a {kind} block cannot be honoured here.", at)
    message["content"] = "\n".join(texts)
    keep = texts or len(message) > 2 or not results  # an empty user turn after results goes
    return results + ([message] if keep else [])


def _only(block: dict[str, Any], known: set[str], at: str) -> None:
    for name in block:
        if name not in known and name not in _BLOCK_IGNORED:
            raise Unsupported(field=f"{at}.{name}")


def _image(source: object, at: str) -> str:
    if isinstance(source, dict) and source.get("type") == "base64":
        data = source.get("data")
        if isinstance(data, str):
            return data
    raise Unsupported("Images must be base64 sources.", f"{at}.source")


def _result(block: dict[str, Any], names: dict[str, str], at: str) -> dict[str, Any]:
    content = block.get("content", "")
    message: dict[str, Any] = {"role": "tool"}
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image":
                image = _image(part.get("source"), f"{at}.content[{index}]")
                message.setdefault("images", []).append(image)
            else:
                raise Unsupported(f"{at}.content[{index}]: a {kind} block cannot be honoured.",
                                  f"{at}.content[{index}]")  # fmt: skip
        content = "\n".join(texts)
    if not isinstance(content, str):
        raise InvalidRequest(f"{at}.content must be text.", {f"{at}.content": "must be text"})
    message["content"] = content
    name = names.get(str(block.get("tool_use_id")))
    if name:
        message["tool_name"] = name
    return message


def _tools(value: object) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("tools must be a list.", {"tools": "must be a list"})
    tools = []
    for index, tool in enumerate(value):
        at = f"tools[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"{at} must be a tool with a name.", {at: "needs a name"})
        if tool.get("type", "custom") != "custom":
            raise Unsupported(f"{at}: the server tool {tool['type']} cannot be honoured.",
                              f"{at}.type")  # fmt: skip
        for name in tool:
            if name not in ("type", "name", "description", "input_schema", "cache_control",
                            "defer_loading"):  # fmt: skip
                raise Unsupported(field=f"{at}.{name}")
        function = {"name": tool["name"], "description": tool.get("description", ""),
                    "parameters": tool.get("input_schema") or {"type": "object"}}  # fmt: skip
        tools.append({"type": "function", "function": function})
    return tools


def estimate_tokens(request: MessagesRequest) -> int:
    """About how many tokens the request's input is: a quarter of its characters (the
    messages, system prompts and tools as the engine gets them), for an engine that cannot
    count (Ollama has no tokenizer endpoint)."""
    characters = 0
    for message in request.native["messages"]:
        characters += len(message.get("content", "")) + len(message.get("thinking", ""))
        characters += sum(len(str(call)) for call in message.get("tool_calls", ()))
    characters += sum(len(str(tool)) for tool in request.native.get("tools", ()))
    return max(1, -(-characters // 4))
