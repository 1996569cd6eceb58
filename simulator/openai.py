"""The simulator as vLLM's OpenAI-compatible server (``Behaviour.engine="vllm"``, ``python -m
simulator --engine vllm``): its endpoints, SSE chunks, statuses and error bodies.

A completion's text is that of the equivalent Ollama request in the Ollama mode (``_equivalent``):
the same messages (or prompt), tools, format and ``think`` (a thinking model's is true unless
``chat_template_kwargs.enable_thinking`` says otherwise), with the sampling fields as its
``options`` under Ollama's names (``max_tokens`` is ``num_predict``) and the ``sim_*`` knobs,
which come as top-level fields here (vLLM takes extra fields). So are its delays, faults and
counters, a client hanging up included. The differences are vLLM's: thinking streams as
``reasoning_content`` and counts in ``max_tokens``; a tool call streams as its name, then its
arguments' JSON in pieces; an ``error`` fault is an error chunk then ``[DONE]``; a model is named
exactly as served, and a request without one asks the first. Not streamed, the status line
comes with the first token and the answer whole after the last, so faults hit it the same way.
``n`` and ``user`` change nothing, ``stop`` cuts nothing, and there is one choice. The
simulator's tokens of a text are its whitespace-separated words (``_words``): they make
``usage.prompt_tokens`` and ``/tokenize``'s count; completion tokens are the streamed deltas.
With a ``prefill_delay`` the usage tells, like vLLM's with prefix caching, the prompt's tokens
found in the prompt cache (``prompt_tokens_details.cached_tokens``; its tokens count the roles
and tools too, so it is capped at ``prompt_tokens``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import uuid
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.app import (
    EMBEDDING_LENGTH,
    THINKING_MODELS,
    Behaviour,
    Counters,
    _Answer,
    _content_text,
    _done_reason,
    _Generation,
    _normalised,
    _pieces,
    _Prompt,
    _vector,
)

VERSION = "0.11.0"
MAX_MODEL_LEN = 4096
# OpenAI's sampling fields that Ollama reads from ``options``, by their Ollama names
_OPTIONS = {"max_tokens": "num_predict", "max_completion_tokens": "num_predict", "stop": "stop",
            "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed",
            "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
            "repetition_penalty": "repeat_penalty", "min_p": "min_p"}  # fmt: skip
_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError",
                503: "ServiceUnavailableError"}  # fmt: skip
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]
_JSON = [(b"content-type", b"application/json")]
_DONE = b"data: [DONE]\n\n"


def routes(defaults: Behaviour, counters: Counters, seats: anyio.Semaphore | None
           ) -> list[Route]:  # fmt: skip
    async def models(request: Request) -> Response:
        created = int(time.time())
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "vllm", "root": name,
             "parent": None, "max_model_len": MAX_MODEL_LEN}
            for name in defaults.models
        ]})  # fmt: skip

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def version(request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def metrics(request: Request) -> Response:
        """The served names are one engine's, so each tells its count, in vLLM's float format."""
        lines = []
        for gauge, value in (("running", counters.running), ("waiting", counters.waiting)):
            lines += [f"# TYPE vllm:num_requests_{gauge} gauge"] + [
                f'vllm:num_requests_{gauge}{{model_name="{name}"}} {float(value)}'
                for name in defaults.models
            ]
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def tokenize(request: Request) -> Response:
        asked = await _body(request)
        if isinstance(asked, Response):
            return asked
        model = asked.get("model") or defaults.models[0]
        if model not in defaults.models:
            return _not_found(model)
        tokens = [int.from_bytes(hashlib.sha256(w.encode()).digest()[:2]) for w in _words(asked)]
        return JSONResponse({"count": len(tokens), "max_model_len": MAX_MODEL_LEN,
                             "tokens": tokens, "token_strs": None})  # fmt: skip

    async def embeddings(request: Request) -> Response:
        """``/api/embed``'s vectors; as floats, or base64 float32 (the openai SDK asks so)."""
        asked = await _body(request)
        if isinstance(asked, Response):
            return asked
        model = asked.get("model") or defaults.models[0]
        if model not in defaults.models:
            return _not_found(model)
        texts = asked.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        size = asked.get("dimensions") or EMBEDDING_LENGTH
        if not isinstance(texts, list) or not isinstance(size, int) or size > EMBEDDING_LENGTH:
            return _error(400, f"input is required; dimensions at most {EMBEDDING_LENGTH}")
        counters.embedded += 1
        data = []
        for index, text in enumerate(map(str, texts)):
            vector: Any = _normalised(_vector(model, text, size))
            if asked.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        count = sum(len(str(text).split()) for text in texts)
        counters.input_tokens += count
        return JSONResponse({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": count, "total_tokens": count}})  # fmt: skip

    return [
        Route("/v1/models", models),
        Route("/health", health),
        Route("/version", version),
        Route("/metrics", metrics),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route(
            "/v1/chat/completions",
            _Completion(defaults, counters, seats, chat=True),
            methods=["POST"],
        ),
        Route(
            "/v1/completions", _Completion(defaults, counters, seats, chat=False), methods=["POST"]
        ),
    ]


class _Completion(_Generation):
    """``POST /v1/chat/completions`` or ``/v1/completions``: the Ollama mode's generation
    asked and answered the OpenAI way."""

    def _error(self, status: int, message: str) -> Response:
        return _error(status, message)

    def _accept(self, request: dict[str, Any]) -> dict[str, Any] | Response:
        key, kind = ("messages", list) if self.chat else ("prompt", str)
        if not isinstance(request.get(key), kind):
            return _error(400, f"{key} is required")
        for name in ("max_tokens", "max_completion_tokens"):
            limit = request.get(name)
            if limit is not None and (not isinstance(limit, int) or limit < 1):
                return _error(400, f"{name} must be at least 1, got {limit}.")
        model = request.get("model") or (self.defaults.models or ("",))[0]
        if model not in self.defaults.models:
            return _not_found(model)
        return {**request, "model": model}

    def _options(self, request: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in request.items() if k.startswith("sim_")}

    def _answer(self, request: dict[str, Any], behaviour: Behaviour, prompt: _Prompt) -> _Answer:
        ollama = _equivalent(request, chat=self.chat)
        options = ollama.get("options") or {}
        limit = options.get("num_predict")  # vLLM's counts the thinking too
        pieces = _pieces(ollama, behaviour, chat=self.chat)[:limit]
        calls = [_call(call) for piece in pieces for call in piece.get("tool_calls", ())]
        deltas = _deltas(pieces, calls)
        reason = "tool_calls" if calls else _done_reason(options, len(pieces))
        count = len(_words(request))
        usage: dict[str, Any] = {"prompt_tokens": count, "completion_tokens": len(deltas),
                                 "total_tokens": count + len(deltas)}  # fmt: skip
        if behaviour.prefill_delay:
            usage["prompt_tokens_details"] = {"cached_tokens": min(prompt.cached, count)}
        head = {"id": ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex,
                "object": "chat.completion" if self.chat else "text_completion",
                "created": int(time.time()), "model": request["model"]}  # fmt: skip
        error = {"error": _error_info(500, "simulated failure mid-stream")}
        if not request.get("stream"):
            text = "".join(str(piece.get("content", "")) for piece in pieces)
            choice: dict[str, Any] = {"index": 0, "text": text}
            if self.chat:
                thinking = "".join(str(piece.get("thinking", "")) for piece in pieces)
                choice = {"index": 0, "message": {
                    "role": "assistant", "content": text or (None if calls else ""),
                    "reasoning_content": thinking or None, "tool_calls": calls}}  # fmt: skip
            whole = {**head, "choices": [{**choice, "logprobs": None, "finish_reason": reason,
                                          "stop_reason": None}], "usage": usage}  # fmt: skip
            return _Answer(_JSON, [b""] * len(deltas), lambda: self._counted(usage, _dumps(whole)),
                           _dumps(error))  # fmt: skip

        head["object"] = "chat.completion.chunk" if self.chat else "text_completion"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            fields = {"delta": delta} if self.chat else {"text": delta.get("content", "")}
            choice = {"index": 0, **fields, "logprobs": None, "finish_reason": finish}
            return _sse({**head, "choices": [choice]})

        frames = [chunk(delta) for delta in deltas] or [b""]
        if self.chat:
            frames[0] = chunk({"role": "assistant", "content": ""}) + frames[0]
        end = chunk({}, reason)
        if (request.get("stream_options") or {}).get("include_usage"):
            end += _sse({**head, "choices": [], "usage": usage})
        return _Answer(_SSE, frames, lambda: self._counted(usage, end + _DONE), _sse(error) + _DONE)

    def _counted(self, usage: dict[str, Any], end: bytes) -> bytes:
        """The answer's end, its usage counted as it goes (once)."""
        self.counters.input_tokens += usage["prompt_tokens"]
        self.counters.output_tokens += usage["completion_tokens"]
        return end


def _equivalent(request: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    """The Ollama request whose text this one's is (see the module docstring)."""
    ollama: dict[str, Any] = {"model": request["model"]}
    if chat:
        ollama["messages"] = request["messages"]
        if request.get("tools") and request.get("tool_choice") != "none":
            ollama["tools"] = request["tools"]
        asked = request.get("chat_template_kwargs") or {}
        thinks = request["model"] in THINKING_MODELS
        if "enable_thinking" in asked or thinks:
            ollama["think"] = thinks and bool(asked.get("enable_thinking", True))
        if ollama.get("think") and request.get("reasoning_effort"):
            ollama["think"] = request["reasoning_effort"]
    else:
        ollama["prompt"] = request["prompt"]
    answer_format = request.get("response_format") or {}
    if answer_format.get("type") == "json_object":
        ollama["format"] = "json"
    elif answer_format.get("type") == "json_schema":
        ollama["format"] = (answer_format.get("json_schema") or {}).get("schema")
    options = {
        _OPTIONS.get(name, name): value
        for name, value in request.items()
        if value is not None and (name in _OPTIONS or name.startswith("sim_"))
    }
    if options:
        ollama["options"] = options
    return ollama


def _call(call: dict[str, Any]) -> dict[str, Any]:
    """An Ollama tool call as OpenAI's: with an id, its arguments a JSON string."""
    function = call["function"]
    arguments = json.dumps(function["arguments"], ensure_ascii=False)
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": function["name"], "arguments": arguments}}  # fmt: skip


def _deltas(pieces: list[dict[str, Any]], calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A streamed delta a token; a tool call is its name, then its arguments in pieces."""
    deltas: list[dict[str, Any]] = []
    for piece in pieces:
        if "thinking" in piece:
            deltas.append({"reasoning_content": piece["thinking"]})
        elif "content" in piece:
            deltas.append({"content": piece["content"]})
    for index, call in enumerate(calls):  # an Ollama answer's last piece
        whole = call["function"]["arguments"]
        step = max(1, min(8, len(whole) // 2))
        named = {"index": index, **call, "function": {**call["function"], "arguments": ""}}
        deltas += [{"tool_calls": [named]}] + [
            {"tool_calls": [{"index": index, "function": {"arguments": whole[at : at + step]}}]}
            for at in range(0, len(whole), step)
        ]
    return deltas


def _words(request: dict[str, Any]) -> list[str]:
    """The simulator's tokens of a prompt, or of messages' texts (no template's): its words."""
    if "messages" not in request:
        return str(request.get("prompt") or "").split()
    messages = [m for m in request["messages"] if isinstance(m, dict)]
    return " ".join(_content_text(m.get("content")) for m in messages).split()


async def _body(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _error(400, "invalid request body")
    return body if isinstance(body, dict) else _error(400, "invalid request body")


def _error_info(status: int, message: str) -> dict[str, Any]:
    return {"message": message, "type": _ERROR_TYPES[status], "param": None, "code": status}


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": _error_info(status, message)}, status)


def _not_found(model: object) -> Response:
    return _error(404, f"The model `{model}` does not exist.")


def _dumps(content: dict[str, Any]) -> bytes:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _sse(content: dict[str, Any]) -> bytes:
    return b"data: " + _dumps(content) + b"\n\n"
