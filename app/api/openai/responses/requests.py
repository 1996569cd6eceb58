"""OpenAI Responses request bodies, mapped onto the native request.

==========================================  =================================================
Responses                                    native (``app.generations.request``)
==========================================  =================================================
``model``                                    ``model`` (``DEFAULT_MODEL`` when absent)
``instructions``                             a first ``system`` message (this turn only)
``input``: a string                          one ``user`` message
  ``message`` items (``user``, ``assistant``,  messages (``developer`` is ``system``); text
  ``system``, ``developer``)                 parts joined with newlines; ``input_image`` from
                                             a ``data:`` URL: ``images``
  ``function_call``, ``custom_tool_call``    an assistant's ``tool_calls`` (a custom tool's
                                             text as the argument ``input``)
  ``function_call_output``,                  a ``tool`` message, ``tool_name`` from the call
  ``custom_tool_call_output``
  ``reasoning``                              the next assistant message's ``thinking``
``previous_response_id``                     that response's conversation and answer first
``tools``: ``function``                      ``tools``
  ``custom`` (Codex's ``apply_patch``)       a function of one string argument ``input``,
                                             its grammar in the description; its calls come
                                             back as ``custom_tool_call`` items
  ``namespace``                              its functions, each answered with its namespace
  hosted tools (``web_search``,              not offered: only the service could run them, and
  ``tool_search``, ``file_search``, …)       it does not
``tool_choice``                              ``auto`` keeps the tools, ``none`` sends none;
                                             ``required`` and a named tool cannot be honoured
``temperature``, ``top_p``                   ``options`` of the same names
``max_output_tokens``                        ``options.num_predict``
``reasoning.effort``                         ``think`` where the model can (``none`` and
                                             ``minimal``: ``false``)
``text.format``                              ``json_object``: ``format: "json"``;
                                             ``json_schema``: ``format`` = its schema
``stream``, ``store``, ``background``        delivery (defaults: not streamed, stored, not in
                                             the background)
==========================================  =================================================

``service_tier`` and ``prompt_cache_key`` are read as on chat completions: ``flex`` waits in
the batch band, the key names the conversation (``app.access.placement``).

Accepted and ignored, since they only tune OpenAI's own service or its logs: ``include``,
``metadata`` (echoed), ``client_metadata``, ``user``,
``safety_identifier``, ``truncation``, ``parallel_tool_calls``, ``stream_options``,
``text.verbosity``, ``reasoning.summary``; input items' ``id`` and ``status``, and a
reasoning item's ``encrypted_content``. Anything else is ``Unsupported`` (``400``) naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from app.errors import InvalidRequest, Unsupported
from app.generations.request import CompletionRequest, parse_body

IGNORED = frozenset({"include", "metadata", "prompt_cache_key", "client_metadata",
                     "service_tier", "user", "safety_identifier", "truncation",
                     "parallel_tool_calls", "stream_options"})  # fmt: skip
_KNOWN = frozenset({"model", "input", "instructions", "tools", "tool_choice", "stream",
                    "temperature", "top_p", "max_output_tokens", "reasoning", "text", "store",
                    "background", "previous_response_id", *IGNORED})  # fmt: skip
_HOSTED = frozenset({"web_search", "web_search_preview", "tool_search", "file_search",
                     "code_interpreter", "image_generation", "computer_use_preview",
                     "local_shell", "mcp"})  # fmt: skip
Effort = Literal["on", "off"] | None


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A Responses body, mapped: the conversation it adds (``messages``), the rest of the
    native request, and what the response object echoes or needs."""

    model: str | None
    instructions: str | None
    messages: list[dict[str, Any]]
    native: dict[str, Any]  # options, tools, format: what the native request gets besides
    thinking: Effort
    custom_tools: frozenset[str]  # tools whose calls are custom_tool_call items
    namespaces: dict[str, str]  # a namespaced function -> its namespace
    previous_response_id: str | None
    stream: bool
    store: bool
    background: bool
    echo: dict[str, Any] = field(default_factory=dict)  # the response object's request fields

    def completion(self, history: list[dict[str, Any]], default_model: str, *,
                   can_think: bool | None) -> CompletionRequest:  # fmt: skip
        """The native request: the instructions, ``history`` (a previous response's
        conversation and answer), then this request's messages."""
        native: dict[str, Any] = {**self.native, "stream": self.stream}
        if self.model is not None:
            native["model"] = self.model
        system = [] if self.instructions is None else [
            {"role": "system", "content": self.instructions}]  # fmt: skip
        native["messages"] = [*system, *history, *self.messages]
        if self.thinking is not None and can_think is not False:
            native["think"] = self.thinking == "on"
        return parse_body(native, default_model)


def parse(data: Mapping[str, Any]) -> ResponsesRequest:
    """A ``POST /v1/responses`` body."""
    for name in data:
        if name not in _KNOWN:
            raise Unsupported(field=name)
    options: dict[str, Any] = {}
    for name, option in (("temperature", "temperature"), ("top_p", "top_p"),
                         ("max_output_tokens", "num_predict")):  # fmt: skip
        value = data.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidRequest(f"{name} must be a number.", {name: "must be a number"})
            options[option] = value
    native: dict[str, Any] = {"options": options} if options else {}
    native.update(_format(data.get("text")))
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("instructions must be a string.",
                             {"instructions": "must be a string"})  # fmt: skip
    tools, custom, namespaces = _tools(data.get("tools"))
    choice = data.get("tool_choice", "auto")
    if choice not in ("auto", "none"):
        raise Unsupported('Only tool_choice "auto" and "none" can be honoured.', "tool_choice")
    if tools and choice == "auto":
        native["tools"] = tools
    flags = {}
    for name, default in (("stream", False), ("store", True), ("background", False)):
        flags[name] = data.get(name, default)
        if not isinstance(flags[name], bool):
            raise InvalidRequest(f"{name} must be true or false.", {name: "must be a boolean"})
    previous = data.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise InvalidRequest("previous_response_id must be a string.",
                             {"previous_response_id": "must be a string"})  # fmt: skip
    model = data.get("model")
    echo = {"instructions": instructions, "max_output_tokens": data.get("max_output_tokens"),
            "metadata": data.get("metadata") or {}, "parallel_tool_calls": True,
            "previous_response_id": previous,
            "reasoning": {"effort": _get(data.get("reasoning"), "effort"),
                          "summary": _get(data.get("reasoning"), "summary")},
            "store": flags["store"], "background": flags["background"],
            "temperature": data.get("temperature"), "top_p": data.get("top_p"),
            "text": {"format": _get(data.get("text"), "format") or {"type": "text"}},
            "tool_choice": choice, "tools": data.get("tools") or [], "truncation": "disabled",
            "user": None}  # fmt: skip
    return ResponsesRequest(
        model if isinstance(model, str) else None if model is None else str(model),
        instructions, _input(data.get("input")), native, _effort(data.get("reasoning")),
        custom, namespaces, previous, flags["stream"], flags["store"], flags["background"],
        echo)  # fmt: skip


def _get(value: object, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


def _effort(value: object) -> Effort:
    effort = _get(value, "effort")
    if effort is None:
        return None
    if effort in ("none", "minimal"):
        return "off"
    if effort in ("low", "medium", "high", "xhigh"):
        return "on"
    raise InvalidRequest("reasoning.effort must be none, minimal, low, medium or high.",
                         {"reasoning.effort": "is not a known effort"})  # fmt: skip


def _format(text: object) -> dict[str, Any]:
    found = _get(text, "format")
    kind = _get(found, "type")
    if found is None or kind == "text":
        return {}
    if kind == "json_object":
        return {"format": "json"}
    if kind == "json_schema" and isinstance(_get(found, "schema"), dict):
        return {"format": found["schema"]}
    raise Unsupported("text.format must be text, json_object or json_schema.", "text.format")


def _tools(value: object) -> tuple[list[dict[str, Any]], frozenset[str], dict[str, str]]:
    """The functions the engine is offered, the custom tools among them, and the namespace of
    each namespaced one."""
    if value is None:
        return [], frozenset(), {}
    if not isinstance(value, list):
        raise InvalidRequest("tools must be a list.", {"tools": "must be a list"})
    tools: list[dict[str, Any]] = []
    custom: set[str] = set()
    namespaces: dict[str, str] = {}
    for index, tool in enumerate(value):
        at = f"tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind in _HOSTED:
            continue
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{at} must be an object.", {at: "must be an object"})
        if kind == "function" and isinstance(tool.get("name"), str):
            tools.append(_function(tool))
        elif kind == "custom" and isinstance(tool.get("name"), str):
            custom.add(tool["name"])
            tools.append(_custom(tool))
        elif kind == "namespace" and isinstance(tool.get("tools"), list):
            for member in tool["tools"]:
                if _get(member, "type") == "function" and isinstance(_get(member, "name"), str):
                    namespaces[member["name"]] = str(tool.get("name", ""))
                    tools.append(_function(member))
        else:
            raise Unsupported(f"{at}: a {kind} tool cannot be honoured.", f"{at}.type")
    return tools, frozenset(custom), namespaces


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    function = {"name": tool["name"], "description": tool.get("description") or "",
                "parameters": tool.get("parameters") or {"type": "object"}}  # fmt: skip
    return {"type": "function", "function": function}


def _custom(tool: dict[str, Any]) -> dict[str, Any]:
    """A freeform tool as a function of one string, ``input``: what the model writes there is
    the tool's input, as the grammar (if any) says."""
    description = tool.get("description") or ""
    grammar = _get(tool.get("format"), "definition")
    if isinstance(grammar, str):
        description += f"\nThe input follows this grammar:\n{grammar}"
    text = {"type": "string", "description": "the tool's whole input, as text"}
    parameters = {"type": "object", "required": ["input"], "properties": {"input": text}}
    return {"type": "function", "function": {"name": tool["name"], "description": description,
                                             "parameters": parameters}}  # fmt: skip


def _input(value: object) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("input must be a string or a non-empty list of items.",
                             {"input": "is required"})  # fmt: skip
    return conversation(value)


def conversation(items: list[Any]) -> list[dict[str, Any]]:
    """Input (or output) items as native messages: consecutive calls go in one assistant
    message, each output in a ``tool`` message naming its call's tool."""
    names: dict[str, str] = {}  # call id -> the tool it called
    messages: list[dict[str, Any]] = []
    thinking = ""
    for index, item in enumerate(items):
        at = f"input[{index}]"
        kind = _get(item, "type") or ("message" if _get(item, "role") else None)
        if not isinstance(item, dict):
            raise InvalidRequest(f"{at} must be an object.", {at: "must be an object"})
        if kind == "message":
            messages.append(_message(item, at))
        elif kind in ("function_call", "custom_tool_call"):
            names[str(item.get("call_id"))] = str(item.get("name", ""))
            if kind == "function_call":
                arguments = _arguments(item.get("arguments"), at)
            else:
                arguments = {"input": str(item.get("input", ""))}
            call = {"function": {"name": item.get("name", ""), "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant" or last.get("content"):
                last = {"role": "assistant", "content": ""}
                messages.append(last)
            last.setdefault("tool_calls", []).append(call)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            message = {"role": "tool", "content": _output_text(item.get("output"), at)}
            name = names.get(str(item.get("call_id")))
            if name:
                message["tool_name"] = name
            messages.append(message)
        elif kind == "reasoning":
            summary = item.get("summary") or []
            thinking += "".join(str(_get(part, "text") or "") for part in summary)
            continue
        else:
            raise Unsupported(f"{at}: a {kind} item cannot be honoured.", f"{at}.type")
        if thinking and messages[-1]["role"] == "assistant":
            messages[-1]["thinking"], thinking = thinking, ""
    return messages


def _message(item: dict[str, Any], at: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(f"{at}.role must be user, assistant, system or developer.",
                             {f"{at}.role": "is not a known role"})  # fmt: skip
    content = item.get("content")
    message: dict[str, Any] = {"role": "system" if role == "developer" else role}
    if isinstance(content, str):
        message["content"] = content
        return message
    if not isinstance(content, list):
        raise InvalidRequest(f"{at}.content must be a string or a list of parts.",
                             {f"{at}.content": "must be text or parts"})  # fmt: skip
    texts = []
    for index, part in enumerate(content):
        kind = _get(part, "type")
        if kind in ("input_text", "output_text", "text") and isinstance(_get(part, "text"), str):
            texts.append(part["text"])
        elif kind == "refusal":
            texts.append(str(_get(part, "refusal") or ""))
        elif kind == "input_image":
            url = str(_get(part, "image_url") or "")
            if not url.startswith("data:") or "," not in url:
                raise Unsupported("Images must be data: URLs (base64).",
                                  f"{at}.content[{index}]")  # fmt: skip
            message.setdefault("images", []).append(url.partition(",")[2])
        else:
            raise Unsupported(f"{at}.content[{index}]: a {kind} part cannot be honoured.",
                              f"{at}.content[{index}]")  # fmt: skip
    message["content"] = "\n".join(texts)
    return message


def _arguments(value: object, at: str) -> Any:
    if not isinstance(value, str):
        return value if isinstance(value, dict) else {}
    try:
        return orjson.loads(value) if value.strip() else {}
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"{at}.arguments must be JSON.",
                             {f"{at}.arguments": "is not JSON"}) from None  # fmt: skip


def _output_text(value: object, at: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(_get(part, "text") or "") for part in value)
    raise InvalidRequest(f"{at}.output must be text.", {f"{at}.output": "must be text"})
