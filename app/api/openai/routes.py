"""The OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings`` (cached, ``app.generations.embeddings``), and the model list ``/v1/models``,
which native clients read too.

Each request goes through the one answer pipeline (``app.api.pipeline``): counted like a native
one, mapped onto the native request (``app.api.openai.requests``) and opened in the same
registry, so it shares the cache and running generations with every surface; only the wire
differs (``app.api.openai.wire``). Every route answers its errors in OpenAI's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.access.models import entries, shown
from app.api import pipeline
from app.api.openai import wire
from app.api.openai.requests import OpenAIRequest, parse_chat, parse_embeddings, parse_text
from app.api.openai.wire import Endpoint, error_response
from app.api.pipeline import Asked, Rendering
from app.api.routing import SurfaceRoute
from app.generations.embeddings import EmbeddingRequest
from app.lifespan import State
from app.responses import NO_STORE, JSONBody
from app.settings import Settings

Parse = Callable[[Mapping[str, Any], str], OpenAIRequest]


def _asking(endpoint: Endpoint, parse: Parse) -> pipeline.Parse:
    """The pipeline's parse of one endpoint: the native request, and OpenAI's rendering."""

    async def asked(data: Mapping[str, Any], request: Request[State]) -> Asked:
        mapped = parse(data, request.state["settings"].default_model)
        model, usage = shown(request.scope, mapped.completion.model), mapped.include_usage
        rendering = Rendering(
            body=lambda generation, answer: wire.completion(endpoint, generation, answer),
            wire=lambda generation: wire.ChunkWire(endpoint, model, include_usage=usage),
        )
        return Asked(mapped.completion, rendering)

    return asked


_CHAT = _asking("chat", parse_chat)
_TEXT = _asking("text", parse_text)


async def chat_completions(request: Request[State]) -> Response:
    """``POST /v1/chat/completions``."""
    return await pipeline.complete(request, _CHAT)


async def completions(request: Request[State]) -> Response:
    """``POST /v1/completions``."""
    return await pipeline.complete(request, _TEXT)


def _embedding(data: Mapping[str, Any], settings: Settings
               ) -> tuple[EmbeddingRequest, pipeline.Render]:  # fmt: skip
    asked, encoding = parse_embeddings(data, settings.default_model)
    return asked, lambda answer: wire.embeddings(answer, asked.model, encoding)


async def embeddings(request: Request[State]) -> Response:
    """``POST /v1/embeddings``."""
    return await pipeline.embed(request, _embedding)


async def models(request: Request[State]) -> Response:
    """``GET /v1/models``: what the OpenAI SDK's ``models.list()`` reads (``object``, ``data``)
    and the Anthropic SDK's, at the same path (``has_more``, ``first_id``, ``last_id``), and the
    ``models`` that Ollama's ``/api/tags`` lists, which native clients read: merged over every
    serving host, of those the client may use, its aliases beside them."""
    listed = entries(request.scope, await request.state["hosts"].check())
    data = wire.model_list(listed)
    body = {"object": "list", "data": data, "models": listed, "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}  # fmt: skip
    return JSONBody(body, headers=NO_STORE)


ROUTES = [
    SurfaceRoute("/v1/models", models, errors=error_response),
    SurfaceRoute("/v1/chat/completions", chat_completions, errors=error_response,
                 methods=["POST"]),
    SurfaceRoute("/v1/completions", completions, errors=error_response, methods=["POST"]),
    SurfaceRoute("/v1/embeddings", embeddings, errors=error_response, methods=["POST"]),
]  # fmt: skip
