"""The Ollama-compatible endpoints, at the root, so that ``OLLAMA_HOST=http://<service>`` is
all a client of Ollama needs: ``/api/generate`` and ``/api/chat`` over the same generations as
every surface (cache, joins, limits, routing), through the one answer pipeline
(``app.api.pipeline``) with Ollama's requests (``app.api.ollama.requests``) and lines
(``app.api.ollama.wire``); embeddings (cached, ``app.generations.embeddings``); the model lists
merged over every host; ``/api/show`` from a host that has the model; ``/api/version`` and
``/``.

Model management (``pull``, ``push``, ``create``, ``copy``, ``delete``, blobs) is not for a
public gateway: ``403``, to be done on the Ollama host, unless ``OLLAMA_MANAGEMENT=true``
passes it on to every host. Every route, and every other path under ``/api/``, answers its
errors as Ollama does: ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app.access.models import entries, models, shown
from app.api import pipeline
from app.api.ollama import requests, wire
from app.api.ollama.wire import error_response
from app.api.pipeline import Asked, Rendering
from app.api.routing import SurfaceRoute
from app.errors import Forbidden, InvalidRequest
from app.generations import embeddings
from app.generations.request import Kind
from app.lifespan import State
from app.responses import NO_STORE, JSONBody
from app.settings import Settings

PREFIX = "/api/"  # the paths the surface claims: an unknown one's 404 is Ollama's too
MANAGEMENT = (  # Ollama's model management paths, refused
    ("/api/pull", ["POST"]),
    ("/api/push", ["POST"]),
    ("/api/create", ["POST"]),
    ("/api/copy", ["POST"]),
    ("/api/delete", ["DELETE"]),
    ("/api/blobs/{digest}", ["HEAD", "POST"]),
)


def _asking(kind: Kind) -> pipeline.Parse:
    """The pipeline's parse of ``/api/<kind>``: the native request, and Ollama's rendering."""

    async def asked(data: Mapping[str, Any], request: Request[State]) -> Asked:
        completion = requests.parse(kind, data, request.state["settings"].default_model)
        model = shown(request.scope, completion.model)
        rendering = Rendering(
            body=lambda generation, answer: wire.answer(kind, answer),
            wire=lambda generation: wire.LineWire(kind, model),
            media_type=wire.MEDIA_TYPE,
            ping=b"",  # NDJSON has no form for a heartbeat
        )
        return Asked(completion, rendering)

    return asked


_GENERATE = _asking("generate")
_CHAT = _asking("chat")


async def generate(request: Request[State]) -> Response:
    """``POST /api/generate``."""
    return await pipeline.complete(request, _GENERATE)


async def chat(request: Request[State]) -> Response:
    """``POST /api/chat``."""
    return await pipeline.complete(request, _CHAT)


def _embedding(parse: Callable[[dict[str, Any], str], embeddings.EmbeddingRequest]
               ) -> pipeline.EmbedParse:  # fmt: skip
    def asked(data: Mapping[str, Any], settings: Settings
              ) -> tuple[embeddings.EmbeddingRequest, pipeline.Render]:  # fmt: skip
        return parse(dict(data), settings.default_model), lambda answer: answer  # as it came

    return asked


async def embed(request: Request[State]) -> Response:
    """``POST /api/embed``: cached (``app.generations.embeddings``)."""
    return await pipeline.embed(request, _embedding(embeddings.embed_request))


async def legacy_embeddings(request: Request[State]) -> Response:
    """``POST /api/embeddings``, the legacy endpoint: one prompt, one vector."""
    return await pipeline.embed(request, _embedding(embeddings.legacy_request))


async def tags(request: Request[State]) -> Response:
    """``GET /api/tags``: the models of every serving host, each once: those the client may
    use, and its aliases of them."""
    listed = entries(request.scope, await request.state["hosts"].check())
    return JSONBody({"models": listed}, headers=NO_STORE)


async def ps(request: Request[State]) -> Response:
    """``GET /api/ps``: the models the serving hosts hold in memory, each once: those the
    client may use, and its aliases of them."""
    listed = entries(request.scope, await request.state["hosts"].running())
    return JSONBody({"models": listed}, headers=NO_STORE)


async def show(request: Request[State]) -> Response:
    """``POST /api/show``: from a serving host that has the model."""
    body = await pipeline.read_object(request)
    model = body.get("model", body.get("name"))
    if not isinstance(model, str):
        raise InvalidRequest("model is required.", {"model": "is required"})
    target = models(request.scope).checked(model)
    return JSONBody(await request.state["hosts"].show(target, body), headers=NO_STORE)


async def version(request: Request[State]) -> Response:
    """``GET /api/version``: a serving host's."""
    return JSONBody({"version": await request.state["hosts"].version()}, headers=NO_STORE)


async def root(request: Request[State]) -> Response:
    """``GET /`` and ``HEAD /``, which clients probe to find Ollama."""
    return PlainTextResponse(wire.RUNNING)


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


ROUTES = [
    SurfaceRoute("/api/generate", generate, errors=error_response, methods=["POST"]),
    SurfaceRoute("/api/chat", chat, errors=error_response, methods=["POST"]),
    SurfaceRoute("/api/embed", embed, errors=error_response, methods=["POST"]),
    SurfaceRoute("/api/embeddings", legacy_embeddings, errors=error_response, methods=["POST"]),
    SurfaceRoute("/api/tags", tags, errors=error_response),
    SurfaceRoute("/api/ps", ps, errors=error_response),
    SurfaceRoute("/api/show", show, errors=error_response, methods=["POST"]),
    SurfaceRoute("/api/version", version, errors=error_response),
    SurfaceRoute("/", root, errors=error_response, methods=["GET", "HEAD"], keyed=False),
    *(SurfaceRoute(path, manage, errors=error_response, methods=methods)
      for path, methods in MANAGEMENT),
]  # fmt: skip
