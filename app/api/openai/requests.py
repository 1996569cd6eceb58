"""OpenAI request bodies, mapped onto the native ``CompletionRequest`` field by field.

``/v1/chat/completions``:

==========================================  =================================================
OpenAI                                       native (``app.generations.request``), hence Ollama
==========================================  =================================================
``model``                                    ``model`` (``DEFAULT_MODEL`` when absent)
``messages``                                 ``messages``: ``developer`` is ``system``; text
                                             parts are joined; ``data:`` image URLs become
                                             ``images``; assistant ``tool_calls`` get their
                                             arguments as objects; a tool message's
                                             ``tool_call_id`` becomes the called ``tool_name``
``temperature``, ``top_p``, ``seed``,        ``options`` of the same names
``frequency_penalty``, ``presence_penalty``
``max_tokens``, ``max_completion_tokens``    ``options.num_predict``
``stop`` (a string or a list)                ``options.stop`` (a list)
``response_format``                          ``text``: nothing; ``json_object``: ``format:
                                             "json"``; ``json_schema``: ``format`` = its schema
``tools``, ``tool_choice``                   ``tools``; ``tool_choice`` ``auto`` keeps them,
                                             ``none`` sends none
``reasoning_effort``, ``reasoning.effort``   ``think``: ``none`` is false, a level is the level
``stream``, ``stream_options.include_usage`` delivery only: the stream, and its usage chunk
``user``                                     nothing (accepted: it names the end user)
``service_tier``, ``prompt_cache_key``       delivery only: ``flex`` waits in the batch band;
                                             the key names the conversation (affinity)
``cache``, ``keep_alive``, ``options``       the same (our extensions; the mapped options
                                             above go over those in ``options``)
==========================================  =================================================

``/v1/completions`` takes ``prompt`` (one string) and the same options, and completes it as it
is, untemplated (``raw``). ``/v1/embeddings``
takes ``model``, ``input`` (a string or strings; token arrays are unsupported), ``dimensions``,
``encoding_format`` (``float``, or ``base64``, which the SDK asks for unless told) and ``user``,
and is Ollama's ``/api/embed``, sharing its cache entries. The content key comes
from the native request, so the same question asked here and natively is one cache entry.
What cannot be honoured (``n`` > 1, ``logprobs``, ``logit_bias``, ``echo``, ``suffix``, image
URLs that are not ``data:``, ``tool_choice`` ``required`` or a named function, any other
field) is ``Unsupported`` (400), naming the field; a value of the wrong type is the native
``InvalidRequest`` (422), as on the native API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from app.errors import InvalidRequest, Unsupported
from app.generations.embeddings import EmbeddingRequest, embed_request
from app.generations.request import (
    THINK_LEVELS,
    CompletionRequest,
    parse_body,
    require_messages,
)

_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed",
            "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
            "max_tokens": "num_predict", "max_completion_tokens": "num_predict",
            "stop": "stop"}  # fmt: skip
_DELIVERY = ("model", "stream", "stream_options", "user", "cache", "keep_alive", "options",
             "service_tier", "prompt_cache_key")  # fmt: skip
# each: the value that changes nothing (None: only absent or null)
_HONOURED_ONLY_AS = {"n": 1, "logprobs": False, "top_logprobs": None, "logit_bias": None,
                     "echo": False, "best_of": 1, "suffix": None, "parallel_tool_calls": True,
                     "store": False}  # fmt: skip
_CHAT = frozenset({*_OPTIONS, *_DELIVERY, "messages", "response_format", "tools", "tool_choice",
                   "reasoning_effort", "reasoning", "n", "logprobs", "top_logprobs",
                   "logit_bias", "parallel_tool_calls", "store"})  # fmt: skip
_TEXT = frozenset({*_OPTIONS, *_DELIVERY, "prompt", "n", "logprobs", "logit_bias", "echo",
                   "best_of", "suffix"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class OpenAIRequest:
    completion: CompletionRequest
    include_usage: bool = False


def parse_chat(data: Mapping[str, Any], default_model: str) -> OpenAIRequest:
    """A ``/v1/chat/completions`` body."""
    body = _checked(data, _CHAT)
    native = _common(body)
    require_messages(body)
    native["messages"] = _messages(body["messages"])
    if "response_format" in body:
        native.update(_response_format(body["response_format"]))
    choice = body.get("tool_choice", "auto")
    if choice not in ("auto", "none"):
        raise Unsupported('Only tool_choice "auto" and "none" can be honoured.', "tool_choice")
    if body.get("tools") and choice == "auto":
        native["tools"] = body["tools"]
    effort = body.get("reasoning_effort", _get(body.get("reasoning"), "effort"))
    if effort is not None:
        if effort != "none" and effort not in THINK_LEVELS:
            levels = ", ".join(("none", *THINK_LEVELS))
            raise InvalidRequest(f"reasoning_effort must be one of {levels}.",
                                 {"reasoning_effort": "is not a known level"})  # fmt: skip
        native["think"] = False if effort == "none" else effort
    return _request(body, native, default_model)


def parse_text(data: Mapping[str, Any], default_model: str) -> OpenAIRequest:
    """A ``/v1/completions`` body."""
    body = _checked(data, _TEXT)
    native = _common(body)
    if not isinstance(body.get("prompt"), str):
        if isinstance(body.get("prompt"), list):
            raise Unsupported("Only one prompt, as a string, can be answered.", "prompt")
        raise InvalidRequest("prompt must be a string.", {"prompt": "must be a string"})
    native["prompt"] = body["prompt"]
    text = _request(body, native, default_model)
    return replace(text, completion=replace(text.completion, raw=True))  # completed as given


def parse_embeddings(data: Mapping[str, Any], default_model: str
                     ) -> tuple[EmbeddingRequest, str]:  # fmt: skip
    """A ``/v1/embeddings`` body: the upstream request, and the encoding asked for."""
    body = _checked(data, frozenset({"model", "input", "dimensions", "encoding_format", "user"}))
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise Unsupported("encoding_format must be float or base64.", "encoding_format")
    given = body.get("input")
    if isinstance(given, list) and given and not all(isinstance(i, str) for i in given):
        raise Unsupported("Only text input is supported, not token arrays.", "input")
    native = {k: body[k] for k in ("model", "input", "dimensions") if body.get(k) is not None}
    return embed_request(native, default_model), encoding


def _checked(data: Mapping[str, Any], known: frozenset[str]) -> Mapping[str, Any]:
    """The body, once every field of it is known to be one that can be honoured."""
    for name, value in data.items():
        if name not in known:
            raise Unsupported(field=name)
        if name in _HONOURED_ONLY_AS and value is not None and value != _HONOURED_ONLY_AS[name]:
            raise Unsupported(f"{name} = {orjson.dumps(value).decode()} cannot be honoured.", name)
    return data


def _common(body: Mapping[str, Any]) -> dict[str, Any]:
    """The native fields every OpenAI endpoint shares: options and our extensions."""
    options = {} if body.get("options") is None else body["options"]
    if not isinstance(options, dict):
        raise InvalidRequest("options must be an object.", {"options": "must be an object"})
    options = dict(options)
    for name, option in _OPTIONS.items():
        value = body.get(name)
        if value is None:
            continue
        if name == "stop":
            value = [value] if isinstance(value, str) else value
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"{name} must be a number.", {name: "must be a number"})
        options[option] = value
    native: dict[str, Any] = {name: body[name] for name in ("cache", "keep_alive") if name in body}
    if options:
        native["options"] = options
    return native


def _request(body: Mapping[str, Any], native: dict[str, Any], default_model: str
             ) -> OpenAIRequest:  # fmt: skip
    native["stream"] = body.get("stream") is True
    if body.get("model") is not None:
        native["model"] = body["model"]
    stream_options = {} if body.get("stream_options") is None else body["stream_options"]
    if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
        raise Unsupported("Only stream_options.include_usage is supported.", "stream_options")
    completion = replace(parse_body(native, default_model), **placement(body))
    return OpenAIRequest(completion, include_usage=stream_options.get("include_usage") is True)


def placement(body: Mapping[str, Any]) -> dict[str, Any]:
    """What an OpenAI body asks of where its generation goes (``app.access.placement``):
    ``service_tier`` ``flex`` is the batch band (any other tier asks nothing more), and
    ``prompt_cache_key`` names the conversation."""
    asked: dict[str, Any] = {}
    for name in ("service_tier", "prompt_cache_key"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise InvalidRequest(f"{name} must be a string.", {name: "must be a string"})
    if body.get("service_tier") == "flex":
        asked["band"] = "batch"
    if body.get("prompt_cache_key"):
        asked["session"] = body["prompt_cache_key"]
    return asked


def _response_format(value: object) -> dict[str, Any]:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"format": "json"}
    if kind == "json_schema":
        assert isinstance(value, dict)
        schema = _get(value.get("json_schema"), "schema")
        if isinstance(schema, dict):
            return {"format": schema}
        raise InvalidRequest("response_format.json_schema.schema must be an object.",
                             {"response_format": "has no schema"})  # fmt: skip
    raise Unsupported("response_format must be text, json_object or json_schema.",
                      "response_format")  # fmt: skip


def _get(value: object, name: str) -> Any:
    """``value[name]`` when ``value`` is an object that has it, else ``None``."""
    return value.get(name) if isinstance(value, dict) else None


def _messages(messages: list[Any]) -> list[Any]:
    """OpenAI's messages as Ollama's; what is not a message is left for the native checks."""
    names: dict[str, str] = {}  # tool call id -> the function it called
    mapped = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            mapped.append(message)
            continue
        native: dict[str, Any] = {}
        for name, value in message.items():
            convert = _MESSAGE_FIELDS.get(name)
            if convert is None:
                raise Unsupported(f"messages[{index}].{name} is not supported.",
                                  f"messages[{index}].{name}")  # fmt: skip
            native.update(convert(value, names, f"messages[{index}]"))
        native.setdefault("content", "")  # an assistant's tool calls may come with none
        mapped.append(native)
    return mapped


def _role(value: object, names: dict[str, str], where: str) -> dict[str, Any]:
    return {"role": "system" if value == "developer" else value}


def _content(value: object, names: dict[str, str], where: str) -> dict[str, Any]:
    if value is None or isinstance(value, str):
        return {"content": value or ""}
    if not isinstance(value, list):
        return {"content": value}  # the native checks say what is wrong
    texts, images = [], []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = str(_get(part.get("image_url"), "url") or "")
            if not url.startswith("data:") or "," not in url:
                raise Unsupported("Images must be data: URLs (base64).", f"{where}.content")
            images.append(url.partition(",")[2])
        else:
            raise Unsupported("Only text and image_url parts are supported.", f"{where}.content")
    found: dict[str, Any] = {"content": "\n".join(texts)}
    if images:
        found["images"] = images
    return found


def _tool_calls(value: object, names: dict[str, str], where: str) -> dict[str, Any]:
    if not isinstance(value, list):
        return {"tool_calls": value}
    calls = []
    for call in value:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise InvalidRequest(f"{where}.tool_calls must hold functions.",
                                 {f"{where}.tool_calls": "must hold functions"})  # fmt: skip
        arguments = function.get("arguments", "{}")
        try:
            arguments = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                f"{where}.tool_calls arguments must be JSON.",
                {f"{where}.tool_calls": "arguments are not JSON"},
            ) from None
        names[str(call.get("id"))] = str(function.get("name", ""))
        calls.append({"function": {"name": function.get("name", ""), "arguments": arguments}})
    return {"tool_calls": calls}


def _tool_call_id(value: object, names: dict[str, str], where: str) -> dict[str, Any]:
    name = names.get(str(value))
    return {"tool_name": name} if name else {}


_MESSAGE_FIELDS: dict[str, Callable[[object, dict[str, str], str], dict[str, Any]]] = {
    "role": _role,
    "content": _content,
    "tool_calls": _tool_calls,
    "tool_call_id": _tool_call_id,
}
