"""The client of an OpenAI-compatible engine (vLLM, SGLang, llama.cpp's server, LM Studio, any
other): a generation request mapped onto ``/v1/chat/completions`` (a raw prompt onto
``/v1/completions``), its stream read back as the tokens an Ollama stream gives, and its
answers as Ollama's, so every surface works over it.

What differs between these engines is data, in ``Profile``: how each turns thinking on or off,
counts a prompt's tokens, tells what it has queued, and lists its models. The mapping of a
request is a table in the README ("Engines"): a prompt becomes a chat of one user message after
the system prompt, as Ollama's templated ``/api/generate`` does; options map field by field,
and one that no such engine honours is refused naming it (``options.NAME``), while Ollama's
loading controls (``num_ctx``, ``num_gpu``, ``keep_alive``, …) are ignored, since these servers
fix them at start. The tool calls the engine streams as argument pieces are assembled into
whole calls, sent when the engine finishes.
"""

from __future__ import annotations

import base64
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from app.errors import (
    InvalidRequest,
    ModelNotFound,
    ServiceError,
    Unsupported,
    UpstreamError,
)
from app.upstream.engine import Finished, Prompt, Relay, Token
from app.upstream.streaming import (
    Timeouts,
    engine_http,
    get_json,
    status_error,
    stream_lines,
    under,
)

# Ollama's options as the OpenAI-compatible request's fields
OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed",
           "num_predict": "max_tokens", "stop": "stop", "min_p": "min_p",
           "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
           "repeat_penalty": "repetition_penalty"}  # fmt: skip
# Ollama's controls of how a model is loaded and run, which these servers fix at start
IGNORED_OPTIONS = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread",
                             "use_mmap", "use_mlock", "numa", "low_vram", "vocab_only",
                             "num_keep"})  # fmt: skip
NAMES = {"vllm": "vLLM", "sglang": "SGLang", "llamacpp": "llama.cpp", "lmstudio": "LM Studio",
         "openai": "the OpenAI-compatible engine"}  # fmt: skip
_DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", None: "stop"}
_IMAGE_TYPES = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                (b"RIFF", "image/webp"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Profile:
    """What one engine does its own way."""

    name: str  # in errors and logs
    # how thinking is switched: the chat template's enable_thinking (vLLM, SGLang, llama.cpp,
    # LM Studio with such models), or only OpenAI's reasoning_effort
    template_thinking: bool = True
    # how a prompt's tokens are counted: vLLM's /tokenize of messages, llama.cpp's
    # /apply-template then /tokenize, or not at all
    tokenizer: str | None = None
    # the Prometheus gauge of requests the engine has queued, not yet running
    waiting_metric: str | None = None
    # its model listing: OpenAI's, or LM Studio's own, which also says which are loaded
    listing: str = "/v1/models"


_WAITING = {"vllm": "vllm:num_requests_waiting", "sglang": "sglang:num_queue_reqs",
            "llamacpp": "llamacpp:requests_deferred"}  # fmt: skip


def profile(engine: str) -> Profile:
    tokenizer = engine if engine in ("vllm", "llamacpp") else None
    listing = "/api/v0/models" if engine == "lmstudio" else "/v1/models"
    return Profile(NAMES[engine], template_thinking=engine != "openai", tokenizer=tokenizer,
                   waiting_metric=_WAITING.get(engine), listing=listing)  # fmt: skip


class OpenAIClient:
    """Talks to one OpenAI-compatible server over an ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, engine: Profile, timeouts: Timeouts) -> None:
        self._http = http
        self._engine = engine
        self._timeouts = timeouts
        self._chat_url = under(http, b"v1/chat/completions")
        self._text_url = under(http, b"v1/completions")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def generate(self, request: Prompt, emit: Relay) -> None:
        """Streams ``request`` as a chat (a raw prompt: a text completion) into ``emit``; see
        the module docstring."""
        stream = _Stream(self._engine.name, emit)
        body = chat_body(request, self._engine)
        url = self._chat_url
        if "prompt" in body:
            url = self._text_url
        await stream_lines(self._http, url, orjson.dumps(body), engine=self._engine.name,
                           timeouts=self._timeouts, on_line=stream.line,
                           status_error=self._status_error)  # fmt: skip

    async def models(self) -> list[dict[str, Any]]:
        """The served models as Ollama's ``/api/tags`` lists models."""
        return [_tag(model) for model in await self._listed()]

    async def version(self) -> str:
        return self._engine.name

    async def running(self) -> list[dict[str, Any]]:
        """The models in memory: those LM Studio says are loaded; every model of the others,
        which load what they serve when they start."""
        return [_tag(model) for model in await self._listed() if model.get("state") != "not-loaded"]

    async def _listed(self) -> list[dict[str, Any]]:
        data = (await self._get_json(self._engine.listing)).get("data")
        if not isinstance(data, list):
            raise UpstreamError(f"{self._engine.name}'s model list has no data array.")
        return [model for model in data if isinstance(model, dict) and "id" in model]

    async def show(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/api/show`` as far as ``/v1/models`` tells: the model exists; its capabilities
        are not listed, so thinking is asked as the client asked it."""
        name = str(body.get("model") or body.get("name") or "")
        for model in await self.models():
            if model["name"] == _served_name(name):
                return {"modelfile": "", "parameters": "", "template": "",
                        "details": model["details"], "model_info": {}}  # fmt: skip
        raise ModelNotFound(f"{self._engine.name} does not serve this model: {name}")

    async def embed(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``/api/embed`` (or the legacy ``/api/embeddings``) through ``/v1/embeddings``."""
        legacy = path == "/api/embeddings"
        inputs = body.get("prompt") if legacy else body.get("input")
        asked: dict[str, Any] = {"model": _served_name(str(body.get("model"))), "input": inputs}
        if body.get("dimensions") is not None:
            asked["dimensions"] = body["dimensions"]
        answer = await self._get_json("/v1/embeddings", asked)
        vectors = [item.get("embedding") for item in answer.get("data") or ()]
        if not vectors or not all(isinstance(v, list) for v in vectors):
            raise UpstreamError(f"{self._engine.name}'s embeddings have no vectors.")
        if legacy:
            return {"embedding": vectors[0]}
        usage = answer.get("usage") or {}
        return {"model": body.get("model"), "embeddings": vectors,
                "prompt_eval_count": usage.get("prompt_tokens", 0)}  # fmt: skip

    async def count_tokens(self, request: Prompt) -> int | None:
        """The prompt's tokens, chat template included, as the engine itself counts them: what
        its usage will say of the same request; ``None`` for an engine that cannot say."""
        body = chat_body(request, self._engine)
        asked: dict[str, Any] = {name: body[name] for name in ("model", "messages", "tools")
                                 if name in body}  # fmt: skip
        if self._engine.tokenizer == "vllm":
            return int((await self._get_json("/tokenize", asked)).get("count", 0))
        if self._engine.tokenizer == "llamacpp":
            prompt = (await self._get_json("/apply-template", asked)).get("prompt", "")
            tokens = await self._get_json("/tokenize", {"content": prompt, "add_special": True,
                                                        "parse_special": True})  # fmt: skip
            return len(tokens.get("tokens") or ())
        return None

    async def waiting(self) -> int | None:
        """The requests the engine has queued (its ``/metrics``, summed over its models), which
        routing counts beside the service's own; ``None`` when it does not say."""
        metric = self._engine.waiting_metric
        if metric is None:
            return None
        try:
            response = await self._http.get("/metrics")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None  # llama.cpp serves /metrics only with --metrics
        total = 0.0
        for line in response.text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.partition("{")[0] == metric:
                with contextlib.suppress(ValueError):
                    total += float(value)
        return int(total)

    async def forward(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        """Ollama's model management has no counterpart here."""
        raise InvalidRequest(f"{self._engine.name} manages its models itself: {path} "
                             "is Ollama's only.")  # fmt: skip

    async def _get_json(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await get_json(self._http, path, body, engine=self._engine.name,
                              status_error=self._status_error)  # fmt: skip

    def _status_error(self, status: int, body: bytes) -> ServiceError:
        """Maps an OpenAI-style error answer (``{"error": {"message"}}``, or vLLM's flat
        ``{"message"}``) onto our errors."""
        return status_error(self._engine.name, status, _error_message(body) or f"status {status}")


def client(base_url: str, engine: str, key: str, timeouts: Timeouts,
           transport: httpx.AsyncBaseTransport | None = None) -> OpenAIClient:  # fmt: skip
    headers = {"authorization": f"Bearer {key}"} if key else None
    return OpenAIClient(engine_http(base_url, transport, headers), profile(engine), timeouts)


def chat_body(request: Prompt, engine: Profile) -> dict[str, Any]:
    """The request as a streamed ``/v1/chat/completions`` body, or for a raw prompt
    ``/v1/completions``'s; raises ``Unsupported`` for an option no such engine honours."""
    content = request.content()
    body: dict[str, Any] = {"model": _served_name(request.model), "stream": True,
                            "stream_options": {"include_usage": True}}  # fmt: skip
    if content.get("raw"):  # the prompt as it is, to /v1/completions (no system: no template)
        body["prompt"] = content["prompt"]
    else:
        body["messages"] = _messages(content)
    for name, value in (content.get("options") or {}).items():
        if name in IGNORED_OPTIONS:
            continue
        if name not in OPTIONS:
            raise Unsupported(f"options.{name} cannot be honoured by {engine.name}.",
                              field=f"options.{name}")  # fmt: skip
        if name == "num_predict" and value is not None and value < 0:
            continue  # Ollama's "no limit"
        body[OPTIONS[name]] = value
    form = content.get("format")
    if form == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(form, dict):
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": form}}  # fmt: skip
    if content.get("tools"):
        body["tools"] = content["tools"]
    think = content.get("think")
    if think is not None:
        if engine.template_thinking:
            body["chat_template_kwargs"] = {"enable_thinking": bool(think)}
        if isinstance(think, str):
            body["reasoning_effort"] = think
    return body


def _messages(content: dict[str, Any]) -> list[dict[str, Any]]:
    """Ollama's messages (or a prompt, as one user message) as OpenAI's; each tool call gets an
    id, and each tool result the id of the call it answers (the earliest unanswered of that
    name)."""
    found: list[dict[str, Any]] = []
    if content.get("system"):
        found.append({"role": "system", "content": content["system"]})
    if "prompt" in content:
        return [*found, {"role": "user", "content": content["prompt"]}]
    unanswered: list[tuple[str, str]] = []  # (tool name, call id)
    for index, message in enumerate(content["messages"]):
        role = message["role"]
        mapped: dict[str, Any] = {"role": role, "content": message.get("content") or ""}
        if message.get("images"):
            mapped["content"] = [{"type": "text", "text": mapped["content"]},
                                 *map(_image_part, message["images"])]  # fmt: skip
        if message.get("tool_calls"):
            mapped["tool_calls"] = []
            for position, call in enumerate(message["tool_calls"]):
                function, call_id = call.get("function") or {}, f"call_{index}_{position}"
                unanswered.append((str(function.get("name")), call_id))
                mapped["tool_calls"].append({"id": call_id, "type": "function", "function": {
                    "name": function.get("name"),
                    "arguments": orjson.dumps(function.get("arguments") or {}).decode(),
                }})  # fmt: skip
        if role == "tool":
            name = message.get("tool_name")
            match = next((pair for pair in unanswered if pair[0] == name or name is None), None)
            if match is not None:
                unanswered.remove(match)
            mapped["tool_call_id"] = match[1] if match else f"call_{index}"
        found.append(mapped)
    return found


def _image_part(image: str) -> dict[str, Any]:
    head = base64.b64decode(image[:16] + "=" * (-len(image[:16]) % 4), validate=False)
    media = next((kind for magic, kind in _IMAGE_TYPES if head.startswith(magic)), "image/png")
    return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{image}"}}


def _served_name(model: str) -> str:
    """The name as such a server lists it: Ollama's implicit ``:latest`` is not part of it."""
    return model.removesuffix(":latest")


def _tag(model: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI model object as an ``/api/tags`` entry."""
    created = model.get("created")
    stamp = datetime.fromtimestamp(created if isinstance(created, int) else 0, UTC)
    name = str(model["id"])
    details = {"format": "", "family": "", "parameter_size": "", "quantization_level": ""}
    return {"name": name, "model": name, "modified_at": stamp.isoformat().replace("+00:00", "Z"),
            "size": 0, "digest": "", "details": details}  # fmt: skip


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    error = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or "")
    return str(error or "")


@dataclass(slots=True)
class _Stream:
    """Reads one chat stream's ``data:`` lines into tokens, then ``Finished``."""

    engine: str
    emit: Relay
    started: float = field(default_factory=time.monotonic)
    first_at: float | None = None
    done_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    calls: dict[int, dict[str, str]] = field(default_factory=dict)  # by index: name, arguments
    finished: bool = False

    def line(self, line: bytes) -> bool:
        if not line.startswith(b"data:"):
            return False  # comments, event names, ids: nothing of the answer
        data = line[5:].strip()
        if data == b"[DONE]":
            self._finish()
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{self.engine} sent a chunk that is not JSON.") from exc
        if not isinstance(chunk, dict):
            raise UpstreamError(f"{self.engine} sent a chunk that is not a JSON object.")
        if "error" in chunk:
            raise UpstreamError(f"{self.engine} reported an error: "
                                f"{_error_message(data) or chunk['error']}")  # fmt: skip
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            self._choice(choice)
        return False

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        fields = {name: value for name, value in (
            ("thinking", delta.get("reasoning_content") or delta.get("reasoning")),
            ("text", delta.get("content") or choice.get("text")),  # a chat's, or a completion's
        ) if value}  # fmt: skip
        for call in delta.get("tool_calls") or ():
            index = int(call.get("index", len(self.calls)))
            whole = self.calls.setdefault(index, {"name": "", "arguments": ""})
            function = call.get("function") or {}
            whole["name"] += function.get("name") or ""
            whole["arguments"] += function.get("arguments") or ""
        if fields:
            if self.first_at is None:
                self.first_at = time.monotonic()
            self.emit(Token(fields))
        if choice.get("finish_reason"):
            self.done_reason = _DONE_REASONS.get(choice["finish_reason"], "stop")

    def _finish(self) -> None:
        if self.done_reason is None:
            raise UpstreamError(f"{self.engine} ended the stream before it was done.")
        if self.calls:
            self.emit(
                Token({"tool_calls": [self._call(self.calls[i]) for i in sorted(self.calls)]})
            )
        now = time.monotonic()
        first = self.first_at or now
        self.emit(Finished({
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "done_reason": self.done_reason,
            "total_duration": int((now - self.started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": int(self.usage.get("prompt_tokens") or 0),
            "prompt_eval_duration": int((first - self.started) * 1e9),
            "eval_count": int(self.usage.get("completion_tokens") or 0),
            "eval_duration": int((now - first) * 1e9),
        }))  # fmt: skip

    def _call(self, call: dict[str, str]) -> dict[str, Any]:
        try:
            arguments = orjson.loads(call["arguments"] or "{}")
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{self.engine} called a tool with arguments that are not "
                                "JSON.") from exc  # fmt: skip
        return {"function": {"name": call["name"], "arguments": arguments}}
