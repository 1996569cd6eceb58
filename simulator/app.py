"""An Ollama look-alike: the same endpoints, NDJSON lines, statuses and error bodies.

Like Ollama it sends the status line only with the first token, after any "model load" delay, and
notices a client that goes away at any moment (counted as cancelled). Behaviour comes from the
command line (``Behaviour``) and can be changed per request through ``options``: ``sim_tokens``,
``sim_token_delay``, ``sim_first_token_delay``, ``sim_prefill_delay``, ``sim_fault`` and
``sim_fault_after`` (tokens sent before the fault). Faults: ``error`` (an ``{"error": ...}`` line
mid-stream, status 200), ``hang`` (silence; before the status line when ``sim_fault_after`` is
0), ``drop`` (connection closed mid-stream), ``garbage`` (a line that is not JSON), ``500`` and
``busy`` (503). A host busy generating can also be slow to list its models (``tags_delay``).
Like an engine's KV cache (llama.cpp's slots, vLLM's prefix caching), a simulator remembers the
prompts it served lately (``_PromptCache``): a prompt is prefilled, ``prefill_delay`` seconds a
token, only past its longest prefix in common with one of them, so the host that served a
conversation answers its next turn sooner; ``/_sim/counters`` tells the tokens seen and cached.
The text is deterministic per request content and mixes in tokens that break naive SSE relays.
With ``tools`` a chat calls the first tool; a last message that is a tool's result is answered
in words, "The tool said:" and the result's first words. A prompt or the last message (not a
system one) can direct the answer: ``[sim: say WORDS]`` answers those words,
``[sim: say "TEXT"]`` (a JSON string) exactly that text, any character included (``]``, newlines,
markup: the playground's tests answer hostile HTML with it), ``[sim: call NAME {JSON}]`` calls that
tool with those arguments.

``Behaviour.engine="vllm"`` serves vLLM's OpenAI-compatible API instead (``simulator.openai``),
with the same text, knobs, faults and counters.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

VERSION = "0.12.6"
THINKING_MODELS = ("qwen3",)
MODELS = ("llama3.2", "qwen3")
WORDS = (
    " the", " model", " says", " hello", " bottle", " byte", " stream", ",", ".", " and",
    "\n", "\n\n", ' "quoted"', "\r", "\r\n", "\u2028", " 🍾", " é", "\\", " data: x",
    "id: 7", ": not a comment", "\t", " {\"json\": 1}", " <b>", "event: done",
)  # fmt: skip
EMBEDDING_LENGTH = 8  # of every model's vectors
FAULTS = ("none", "error", "hang", "drop", "garbage", "500", "busy")
ENGINES = ("ollama", "vllm")  # whose API it speaks
PROMPT_CACHE_SIZE = 64  # prompts a host remembers
PROMPT_EVAL_COUNT = 26  # what every generation says it read: the gateway's quota tests count on it


@dataclass(frozen=True, slots=True)
class Behaviour:
    tokens: int = 20
    token_delay: float = 0.05  # seconds between tokens
    first_token_delay: float = 0.0  # seconds before the status line, like a model load
    fault: str = "none"
    fault_after: int = 3  # tokens sent before the fault
    models: tuple[str, ...] = MODELS  # what this "host" has pulled
    tags_delay: float = 0.0  # seconds before /api/tags answers, like a host busy generating
    engine: str = "ollama"  # one of ENGINES
    max_running: int = 0  # generations at once (vLLM's --max-num-seqs); more wait; 0: no cap
    prefill_delay: float = 0.0  # seconds a prompt token not in the prompt cache takes; 0: off


class _PromptCache:
    """The token sequences of the prompts a host served lately (``PROMPT_CACHE_SIZE``, the least
    recently served forgotten first), whose prefixes an engine's KV cache would still hold."""

    def __init__(self) -> None:
        self.prompts: OrderedDict[tuple[str, ...], None] = OrderedDict()

    def cached(self, tokens: tuple[str, ...]) -> int:
        """How many of ``tokens`` need no prefill: the longest prefix shared with a prompt."""
        return max((_shared(tokens, prompt) for prompt in self.prompts), default=0)

    def remember(self, tokens: tuple[str, ...]) -> None:
        self.prompts[tokens] = None
        self.prompts.move_to_end(tokens)
        if len(self.prompts) > PROMPT_CACHE_SIZE:
            self.prompts.popitem(last=False)


def _shared(one: tuple[str, ...], other: tuple[str, ...]) -> int:
    """The length of the prefix the two have in common."""
    count = 0
    for mine, theirs in zip(one, other, strict=False):
        if mine != theirs:
            break
        count += 1
    return count


@dataclass(slots=True)
class Counters:
    started: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    embedded: int = 0  # embedding requests answered
    managed: int = 0  # model management requests (pull, delete) answered
    running: int = 0  # generations streaming now
    waiting: int = 0  # generations waiting for one of max_running to end
    peak_running: int = 0  # the most that ever streamed at once
    loaded: set[str] = field(default_factory=set)  # models that generated: /api/ps lists them
    prompt_tokens: int = 0  # the tokens of the prompts generations were asked
    prompt_tokens_cached: int = 0  # of those, found in the prompt cache
    input_tokens: int = 0  # the prompt tokens its answers reported (generations that ended, embeds)
    output_tokens: int = 0  # the generated tokens they reported
    traceparent: str = ""  # the W3C trace context the last generation request came with
    prompts: _PromptCache = field(default_factory=_PromptCache)  # not a counter, not shown


@dataclass(frozen=True, slots=True)
class _Prompt:
    """A generation's prompt as the prompt cache found it."""

    cached: int  # its first tokens, found in the cache
    prefill: float  # seconds the others take before the first token


class _Abort(Exception):
    """Ends a response without completing it, which makes uvicorn drop the connection."""


def create_app(behaviour: Behaviour | None = None) -> Starlette:
    defaults = behaviour or Behaviour()
    counters = Counters()
    seats = anyio.Semaphore(defaults.max_running) if defaults.max_running else None

    async def counters_endpoint(request: Request) -> Response:
        shown = [f.name for f in fields(counters) if f.name not in ("loaded", "prompts")]
        return JSONResponse({name: getattr(counters, name) for name in shown})

    if defaults.engine == "vllm":
        from simulator import openai  # imports this module

        routes = [
            *openai.routes(defaults, counters, seats),
            Route("/_sim/counters", counters_endpoint),
        ]
        return Starlette(routes=routes)

    async def tags(request: Request) -> Response:
        await anyio.sleep(defaults.tags_delay)
        return _json({"models": [_model_entry(name) for name in defaults.models]})

    async def version(request: Request) -> Response:
        return _json({"version": VERSION})

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def ps(request: Request) -> Response:
        """The models that generated since start, as loaded: name, size, expiry, as Ollama."""
        return _json({"models": [
            {**_model_entry(name), "expires_at": "2026-12-31T23:59:59.000000000Z",
             "size_vram": 2019393189}
            for name in defaults.models if name in counters.loaded
        ]})  # fmt: skip

    async def embed(request: Request) -> Response:
        """``/api/embed`` (normalised vectors, ``dimensions`` long) or the legacy
        ``/api/embeddings`` (one prompt, not normalised), deterministic per model and text."""
        try:
            asked = json.loads(await request.body())
            model = str(asked["model"])
        except (ValueError, KeyError, TypeError):
            return _json({"error": "invalid request body"}, 400)
        if model.split(":")[0] not in defaults.models:
            return _json({"error": f'model "{model}" not found, try pulling it first'}, 404)
        counters.embedded += 1
        if request.url.path == "/api/embeddings":  # reports no counts
            prompt = str(asked.get("prompt", ""))
            return _json({"embedding": _vector(model, prompt, EMBEDDING_LENGTH)})
        texts = asked.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        size = asked.get("dimensions") or EMBEDDING_LENGTH
        if not isinstance(size, int) or not 0 < size <= EMBEDDING_LENGTH:
            return _json({"error": f"dimensions must be between 1 and {EMBEDDING_LENGTH}"}, 400)
        vectors = [_normalised(_vector(model, str(text), size)) for text in texts]
        counted = sum(len(str(t).split()) for t in texts)
        counters.input_tokens += counted
        return _json({"model": model, "embeddings": vectors, "total_duration": 1_000_000,
                      "load_duration": 0, "prompt_eval_count": counted})  # fmt: skip

    async def pull(request: Request) -> Response:
        """``/api/pull``: "pulled" at once, streamed as progress lines unless stream is false."""
        counters.managed += 1
        asked = json.loads(await request.body() or b"{}")
        if asked.get("stream") is False:
            return _json({"status": "success"})
        lines = [{"status": "pulling manifest"}, {"status": "success"}]
        return Response(b"".join(map(_encode, lines)), media_type="application/x-ndjson")

    async def delete(request: Request) -> Response:
        counters.managed += 1
        model = str(json.loads(await request.body() or b"{}").get("model", ""))
        if model.split(":")[0] not in defaults.models:
            return _json({"error": f"model '{model}' not found"}, 404)
        return Response(status_code=200)

    async def show(request: Request) -> Response:
        try:
            asked = json.loads(await request.body())
            model = str(asked.get("model") or asked.get("name") or "")
        except (ValueError, AttributeError):
            return _json({"error": "invalid request body"}, 400)
        if model.split(":")[0] not in defaults.models:
            return _json({"error": f"model '{model}' not found"}, 404)
        entry = _model_entry(model.split(":")[0])
        return _json({
            "modelfile": f"FROM {entry['name']}\n",
            "parameters": "stop \"<|eot_id|>\"",
            "template": "{{ .Prompt }}",
            "details": entry["details"],
            "model_info": {"general.architecture": entry["details"]["family"]},
            "capabilities": ["completion", "tools"]
            + (["thinking"] if model.split(":")[0] in THINKING_MODELS else []),
            "modified_at": entry["modified_at"],
        })  # fmt: skip

    return Starlette(
        routes=[
            Route("/", root, methods=["GET", "HEAD"]),
            Route("/api/version", version),
            Route("/api/tags", tags),
            Route("/api/ps", ps),
            Route("/api/show", show, methods=["POST"]),
            Route("/api/embed", embed, methods=["POST"]),
            Route("/api/pull", pull, methods=["POST"]),
            Route("/api/delete", delete, methods=["DELETE"]),
            Route("/api/embeddings", embed, methods=["POST"]),
            Route(
                "/api/generate",
                _Generation(defaults, counters, seats, chat=False),
                methods=["POST"],
            ),
            Route("/api/chat", _Generation(defaults, counters, seats, chat=True), methods=["POST"]),
            Route("/_sim/counters", counters_endpoint),
        ]
    )


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a generation sends once its request passed: ``frames`` ``token_delay`` apart (the
    status line with the first), then ``end()``, made when due since it tells the durations."""

    headers: list[tuple[bytes, bytes]]
    frames: list[bytes]  # one a token
    end: Callable[[], bytes]
    error: bytes  # what the ``error`` fault sends


class _Generation:
    """``POST /api/generate`` or ``/api/chat`` as a raw ASGI app (to watch for disconnects).
    ``simulator.openai`` subclasses it: the same counters, delays and faults, other shapes."""

    def __init__(self, defaults: Behaviour, counters: Counters, seats: anyio.Semaphore | None,
                 *, chat: bool) -> None:  # fmt: skip
        self.defaults, self.counters, self.seats, self.chat = defaults, counters, seats, chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            await self._error(400, "invalid request body")(scope, receive, send)
            return
        request = self._accept(request)
        if isinstance(request, Response):
            await request(scope, receive, send)
            return
        behaviour = _behaviour(self.defaults, self._options(request))
        self.counters.started += 1
        self.counters.traceparent = Headers(scope=scope).get("traceparent", "")
        self.counters.loaded.add(str(request["model"]).split(":")[0])
        if behaviour.fault in ("500", "busy"):
            self.counters.failed += 1
            status = 500 if behaviour.fault == "500" else 503
            text = "server busy, please try again.  maximum pending requests exceeded"
            error = "simulated internal error" if status == 500 else text
            await self._error(status, error)(scope, receive, send)
            return
        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                if not group.cancel_scope.cancel_called:  # not a close after the last line
                    self.counters.cancelled += 1
                    group.cancel_scope.cancel()

            group.start_soon(watch_disconnect)
            counters = self.counters
            if self.seats is not None:
                counters.waiting += 1
                try:
                    await self.seats.acquire()
                finally:
                    counters.waiting -= 1
            counters.running += 1
            counters.peak_running = max(counters.peak_running, counters.running)
            tokens = tuple(_prompt_tokens(request))
            cached = counters.prompts.cached(tokens)  # when it runs, not while it waits
            prompt = _Prompt(cached, behaviour.prefill_delay * (len(tokens) - cached))
            counters.prompt_tokens += len(tokens)
            counters.prompt_tokens_cached += cached
            try:
                await self._stream(self._answer(request, behaviour, prompt), behaviour, prompt,
                                   send)  # fmt: skip
            except _Abort:
                self.counters.failed += 1
                return
            finally:
                counters.prompts.remember(tokens)
                counters.running -= 1
                if self.seats is not None:
                    self.seats.release()
                group.cancel_scope.cancel()

    def _error(self, status: int, message: str) -> Response:
        return _json({"error": message}, status)

    def _accept(self, request: dict[str, Any]) -> dict[str, Any] | Response:
        """The request to answer, or the response that refuses it."""
        model = request.get("model")
        if not model:
            return self._error(400, "model is required")
        if str(model).split(":")[0] not in self.defaults.models:
            return self._error(404, f'model "{model}" not found, try pulling it first')
        if request.get("think") and str(model).split(":")[0] not in THINKING_MODELS:
            return self._error(400, f'"{model}" does not support thinking')
        return request

    def _options(self, request: dict[str, Any]) -> dict[str, Any]:
        """Where the ``sim_*`` knobs are."""
        options: dict[str, Any] = request.get("options") or {}
        return options

    def _answer(self, request: dict[str, Any], behaviour: Behaviour, prompt: _Prompt) -> _Answer:
        started = time.monotonic_ns()
        lines = _lines(request, behaviour, chat=self.chat)
        return _Answer(
            _NDJSON,
            [_encode(line) for line in lines],
            lambda: _encode(self._final(request, behaviour, prompt, started, len(lines))),
            _encode({"error": "simulated failure mid-stream"}),
        )

    async def _stream(self, answer: _Answer, behaviour: Behaviour, prompt: _Prompt, send: Send
                      ) -> None:  # fmt: skip
        faulty = behaviour.fault in ("error", "hang", "drop", "garbage")
        fault_at = behaviour.fault_after if faulty else -1
        await anyio.sleep(behaviour.first_token_delay + prompt.prefill)
        for index, frame in enumerate([*answer.frames, None]):
            if index == fault_at:
                await self._fault(answer, behaviour.fault, index, send)
            if index > 0:
                await anyio.sleep(behaviour.token_delay)
            else:
                await send(
                    {"type": "http.response.start", "status": 200, "headers": answer.headers}
                )
            body = answer.end() if frame is None else frame
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.counters.completed += 1

    async def _fault(self, answer: _Answer, fault: str, sent: int, send: Send) -> None:
        if fault == "hang":  # before the first token, even the status line never comes
            self.counters.failed += 1
            await anyio.sleep_forever()
        if not sent:
            await send({"type": "http.response.start", "status": 200, "headers": answer.headers})
        if fault == "drop":
            raise _Abort
        body = b"<html>502 Bad Gateway</html>\n" if fault == "garbage" else answer.error
        await send({"type": "http.response.body", "body": body, "more_body": False})
        raise _Abort

    def _final(self, request: dict[str, Any], behaviour: Behaviour, prompt: _Prompt,
               started_ns: int, count: int) -> dict[str, Any]:  # fmt: skip
        """Ollama's stats; its ``prompt_eval_count`` is a constant (the gateway's quota tests
        count on it), its ``prompt_eval_duration`` the prefill past the cached prefix."""
        final: dict[str, Any] = {
            "model": request["model"],
            "created_at": _now(),
            **(
                {"message": {"role": "assistant", "content": ""}} if self.chat else {"response": ""}
            ),
            "done": True,
            "done_reason": _done_reason(request.get("options") or {}, count),
        }
        if not self.chat:
            final["context"] = list(range(1, 9))
        total = time.monotonic_ns() - started_ns
        load, prefill = round(behaviour.first_token_delay * 1e9), round(prompt.prefill * 1e9)
        self.counters.input_tokens += PROMPT_EVAL_COUNT
        self.counters.output_tokens += count
        return {
            **final,
            "total_duration": total,
            "load_duration": load,
            "prompt_eval_count": PROMPT_EVAL_COUNT,
            "prompt_eval_duration": 1_000_000 + prefill,
            "eval_count": count,
            "eval_duration": max(total - load - prefill, 0),
        }


_NDJSON = [(b"content-type", b"application/x-ndjson")]


def _behaviour(defaults: Behaviour, options: dict[str, Any]) -> Behaviour:
    overrides = {
        name: options[f"sim_{name}"] for name in asdict(defaults) if f"sim_{name}" in options
    }
    return replace(defaults, **overrides)


def _prompt_tokens(request: dict[str, Any]) -> list[str]:
    """What the prompt cache compares, in the order a template renders it: the words of the
    system prompt, the tools (as JSON), each message's role, content and tool calls, the prompt.
    Either API's chat or completion request."""
    texts = [str(request.get("system") or "")]
    if request.get("tools"):
        texts.append(json.dumps(request["tools"], sort_keys=True))
    for message in request.get("messages") or ():
        if not isinstance(message, dict):
            continue
        texts += [str(message.get("role", "")), _content_text(message.get("content"))]
        if message.get("tool_calls"):
            texts.append(json.dumps(message["tool_calls"], sort_keys=True))
    texts.append(str(request.get("prompt") or ""))
    return " ".join(texts).split()


def _content_text(content: Any) -> str:
    """A message's text; of OpenAI's parts, their texts."""
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _done_reason(options: dict[str, Any], count: int) -> str:
    """``length`` when ``num_predict`` tokens came."""
    limit = options.get("num_predict")
    return "length" if isinstance(limit, int) and count >= limit else "stop"


def _pieces(request: dict[str, Any], behaviour: Behaviour, *, chat: bool) -> list[dict[str, Any]]:
    """The answer of an Ollama request, a token a piece: ``thinking`` first (when asked), then
    ``content`` or ``tool_calls``; deterministic per request content."""
    content = {k: v for k, v in request.items() if k not in ("stream", "keep_alive")}
    seed = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).digest()
    rng = random.Random(seed)
    limit = (request.get("options") or {}).get("num_predict")
    count = (
        min(behaviour.tokens, limit) if isinstance(limit, int) and limit > 0 else behaviour.tokens
    )
    pieces: list[dict[str, Any]] = []
    if request.get("think"):
        pieces += [{"thinking": word} for word in (" Let", " me", " think", ".")]
    tools = request.get("tools") if chat else None
    last = _last_message(request, chat=chat)
    said = _DIRECTIVE.search(str(last.get("content", "")))
    if said and said[1] == "call" and tools and last.get("role") != "tool":
        name, _, arguments = said[2].partition(" ")
        called = {"name": name, "arguments": json.loads(arguments or "{}")}
        pieces.append({"tool_calls": [{"function": called}]})
    elif said and said[1] == "say":
        pieces += [{"content": word} for word in _said(said[2])][:count]
    elif last.get("role") == "tool":  # a tool's result is answered in words: what it said
        said_by_tool = str(last.get("content", "")).split()[:8]
        pieces += [{"content": word} for word in [" The", " tool", " said:"]
                   + [f" {word}" for word in said_by_tool]]  # fmt: skip
    elif tools:
        name = (tools[0].get("function") or {}).get("name", "tool")
        pieces.append({"tool_calls": [{"function": {"name": name, "arguments": {"q": "x"}}}]})
    else:
        pieces += [{"content": rng.choice(WORDS)} for _ in range(count)]
    return pieces


def _lines(request: dict[str, Any], behaviour: Behaviour, *, chat: bool) -> list[dict[str, Any]]:
    """The non-final lines: one a piece."""
    lines = []
    for piece in _pieces(request, behaviour, chat=chat):
        line: dict[str, Any] = {"model": request["model"], "created_at": _now()}
        if chat:
            line["message"] = {
                "role": "assistant",
                "content": piece.get("content", ""),
                **{k: v for k, v in piece.items() if k != "content"},
            }
        else:
            line["response"] = piece.get("content", "")
            if "thinking" in piece:
                line["thinking"] = piece["thinking"]
        line["done"] = False
        lines.append(line)
    return lines


# in a prompt or the last message: "[sim: say some words]" answers those words, '[sim: say
# "a JSON string"]' exactly that text; "[sim: call NAME {json}]" calls that tool with those
# arguments (when tools are offered)
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_DIRECTIVE = re.compile(rf"\[sim: (say|call) ({_JSON_STRING}(?=\])|.*?)\]", re.DOTALL)


def _said(argument: str) -> list[str]:
    """The tokens of a ``say``: its words, each after a space; or a JSON string's text cut
    before each run of whitespace, so that they add up to exactly that text."""
    if re.fullmatch(_JSON_STRING, argument, re.DOTALL):
        return re.findall(r"\s*\S+|\s+", json.loads(argument, strict=False))
    return re.findall(r" ?\S+", " " + argument)


def _last_message(request: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    """What the answer answers: the last message of a chat that is not a system prompt (Claude
    Code puts one after the user's turn), a prompt as a user message."""
    if not chat:
        return {"role": "user", "content": request.get("prompt", "")}
    messages = [m for m in request.get("messages") or () if isinstance(m, dict)]
    spoken = [m for m in messages if m.get("role") != "system"]
    return spoken[-1] if spoken else {}


def _vector(model: str, text: str, size: int) -> list[float]:
    digest = hashlib.sha256(f"{model}\0{text}".encode()).digest()
    return [round(digest[i % len(digest)] / 127.5 - 1, 6) for i in range(size)]


def _normalised(vector: list[float]) -> list[float]:
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


def _text_field(chat: bool, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}


def _model_entry(name: str) -> dict[str, Any]:
    return {
        "name": f"{name}:latest",
        "model": f"{name}:latest",
        "modified_at": "2026-11-01T10:00:00.000000000Z",
        "size": 2019393189,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": name.rstrip("0123456789.") or name,
            "families": [name.rstrip("0123456789.") or name],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def _encode(line: dict[str, Any]) -> bytes:
    """Go's encoding/json: compact, non-ASCII kept, HTML characters escaped, one line."""
    text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode() + b"\n"


def _json(content: dict[str, Any], status: int = 200) -> Response:
    return Response(
        _encode(content).rstrip(b"\n"),
        status_code=status,
        media_type="application/json; charset=utf-8",
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
