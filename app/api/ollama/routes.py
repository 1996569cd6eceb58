"""The Ollama-compatible endpoints, at the root, so that ``OLLAMA_HOST=http://<service>`` is
all a client of Ollama needs: ``/api/generate`` and ``/api/chat`` over the same generations as
every surface (cache, joins, limits, routing), embeddings (cached, ``app.generations.embeddings``),
the model lists merged over every host,
``/api/show`` from a host that has the model, ``/api/version`` and ``/``.

Their bodies are the native request's fields, which are Ollama's own (``app.generations.request``),
so they go through the native checks; what the service cannot honour (``suffix``, ``template``,
``raw``, ``context``, images outside messages, ``logprobs``) is refused with a 400. Model
management (``pull``, ``push``, ``create``, ``copy``, ``delete``, blobs) is not for a public
gateway: ``403``, to be done on the Ollama host, unless ``OLLAMA_MANAGEMENT=true`` passes it on
to every host. Errors are Ollama's ``{"error": "..."}`` (``app.responses.error_response`` knows
these paths).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app.access.admission import count, read_json
from app.api.ollama import wire as ollama_wire
from app.api.pipeline import respond_json, respond_stream
from app.errors import Forbidden, InvalidJSON, InvalidRequest, Unsupported
from app.generations import embeddings
from app.generations.request import Kind, parse_body
from app.lifespan import State
from app.responses import NO_STORE, JSONBody

MANAGEMENT = (  # Ollama's model management paths, refused
    ("/api/pull", ["POST"]),
    ("/api/push", ["POST"]),
    ("/api/create", ["POST"]),
    ("/api/copy", ["POST"]),
    ("/api/delete", ["DELETE"]),
    ("/api/blobs/{digest}", ["HEAD", "POST"]),
)
_UNSUPPORTED = {
    "generate": ("suffix", "template", "raw", "context", "images", "logprobs", "top_logprobs"),
    "chat": ("logprobs", "top_logprobs"),
}


async def generate(request: Request[State]) -> Response:
    """``POST /api/generate``."""
    return await _complete(request, "generate")


async def chat(request: Request[State]) -> Response:
    """``POST /api/chat``."""
    return await _complete(request, "chat")


async def embed(request: Request[State]) -> Response:
    """``POST /api/embed``: cached (``app.generations.embeddings``)."""
    return await _embed(request, embeddings.embed_request)


async def legacy_embeddings(request: Request[State]) -> Response:
    """``POST /api/embeddings``, the legacy endpoint: one prompt, one vector."""
    return await _embed(request, embeddings.legacy_request)


EmbedParser = Callable[[dict[str, Any], str], embeddings.EmbeddingRequest]


async def _embed(request: Request[State], parse: EmbedParser) -> Response:
    account = await count(request, generates=False)
    settings = request.state["settings"]
    data = await read_json(request, settings.max_body_bytes)
    if not isinstance(data, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    asked = parse(data, settings.default_model)
    answer, x_cache = await request.state["embedder"].embed(asked, account)
    return JSONBody(answer, headers={"X-Cache": x_cache})


async def tags(request: Request[State]) -> Response:
    """``GET /api/tags``: the models of every serving host, each once."""
    return JSONBody({"models": await request.state["hosts"].check()}, headers=NO_STORE)


async def ps(request: Request[State]) -> Response:
    """``GET /api/ps``: the models the serving hosts hold in memory, each once."""
    return JSONBody({"models": await request.state["hosts"].running()}, headers=NO_STORE)


async def show(request: Request[State]) -> Response:
    """``POST /api/show``: from a serving host that has the model."""
    body = await read_json(request, request.state["settings"].max_body_bytes)
    model = body.get("model", body.get("name")) if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(model, str):
        raise InvalidRequest("model is required.", {"model": "is required"})
    return JSONBody(await request.state["hosts"].show(model, body), headers=NO_STORE)


async def version(request: Request[State]) -> Response:
    """``GET /api/version``: a serving host's."""
    return JSONBody({"version": await request.state["hosts"].version()}, headers=NO_STORE)


async def root(request: Request[State]) -> Response:
    """``GET /`` and ``HEAD /``, which clients probe to find Ollama."""
    return PlainTextResponse(ollama_wire.RUNNING)


async def manage(request: Request[State]) -> Response:
    """Model management, which a public gateway does not pass on unless ``OLLAMA_MANAGEMENT``
    says so: then every serving host gets it in turn, and the answer comes once all are done."""
    if not request.state["settings"].ollama_management:
        raise Forbidden(
            "Models are managed on the Ollama host itself (ollama pull, ollama rm, ...), "
            "not through this service."
        )
    body = await request.body()
    status, content, media = await request.state["hosts"].forward(
        request.method, request.url.path, body
    )
    return Response(content, status_code=status, media_type=media)


def parse(kind: Kind, data: object) -> dict[str, Any]:
    """The body of ``/api/<kind>`` as native fields, refusing what cannot be honoured."""
    if not isinstance(data, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    for name in _UNSUPPORTED[kind]:
        if data.get(name) not in (None, False, "", []):
            raise Unsupported(f"{name} is not supported by this service.", name)
    native = {k: v for k, v in data.items() if k not in _UNSUPPORTED[kind]}
    if kind == "generate" and "messages" in native:
        raise Unsupported("messages belong to /api/chat.", "messages")
    if kind == "chat" and "prompt" in native:
        raise Unsupported("prompt belongs to /api/generate.", "prompt")
    return native


async def _complete(request: Request[State], kind: Kind) -> Response:
    account = await count(request)
    settings = request.state["settings"]
    native = parse(kind, await read_json(request, settings.max_body_bytes))
    if kind == "chat" and not native.get("messages"):
        raise InvalidRequest("messages must be a non-empty list.", {"messages": "is required"})
    completion = parse_body(native, settings.default_model)
    feed = await request.state["registry"].open(completion, account)
    if not completion.stream:
        return await respond_json(request, feed, lambda whole: ollama_wire.answer(kind, whole))
    return await respond_stream(request, feed, wire=ollama_wire.LineWire(kind, completion.model),
                                media_type=ollama_wire.MEDIA_TYPE, ping=b"")  # fmt: skip
