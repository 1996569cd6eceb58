"""The OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings`` (cached, ``app.generations.embeddings``), and the model list ``/v1/models``,
which native clients read too.

Each generating request is counted by the rate limiter like a native one, then mapped onto the
native request (``app.api.openai.requests``) and opened in the same registry, so it shares the cache
and running generations with every surface; only the wire differs (``app.api.openai.wire``).
Errors take OpenAI's shape (``app.responses.error_response`` knows these paths).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from app.access.admission import count, read_json
from app.api.openai import wire as openai_wire
from app.api.openai.requests import OpenAIRequest, parse_chat, parse_embeddings, parse_text
from app.api.openai.wire import Endpoint
from app.api.pipeline import respond_json, respond_stream
from app.lifespan import State
from app.responses import NO_STORE, JSONBody


async def chat_completions(request: Request[State]) -> Response:
    """``POST /v1/chat/completions``."""
    return await _complete(request, "chat", parse_chat)


async def completions(request: Request[State]) -> Response:
    """``POST /v1/completions``."""
    return await _complete(request, "text", parse_text)


async def embeddings(request: Request[State]) -> Response:
    """``POST /v1/embeddings``."""
    account = await count(request, generates=False)
    settings = request.state["settings"]
    asked, encoding = parse_embeddings(await read_json(request, settings.max_body_bytes),
                                       settings.default_model)  # fmt: skip
    answer, x_cache = await request.state["embedder"].embed(asked, account)
    body = openai_wire.embeddings(answer, asked.model, encoding)
    return JSONBody(body, headers={"X-Cache": x_cache})


async def models(request: Request[State]) -> Response:
    """``GET /v1/models``: what the OpenAI SDK's ``models.list()`` reads (``object``, ``data``),
    and the ``models`` that Ollama's ``/api/tags`` lists, which native clients read, merged over
    every serving host."""
    listed = await request.state["hosts"].check()
    body = {"object": "list", "data": openai_wire.model_list(listed), "models": listed}
    return JSONBody(body, headers=NO_STORE)


async def _complete(
    request: Request[State], endpoint: Endpoint, parse: Callable[[object, str], OpenAIRequest]
) -> Response:
    account = await count(request)
    settings = request.state["settings"]
    asked = parse(await read_json(request, settings.max_body_bytes), settings.default_model)
    completion = asked.completion
    feed = await request.state["registry"].open(completion, account)
    if not completion.stream:
        generation = feed.generation_id
        return await respond_json(
            request, feed, lambda answer: openai_wire.completion(endpoint, generation, answer)
        )
    wire = openai_wire.ChunkWire(endpoint, completion.model, include_usage=asked.include_usage)
    return await respond_stream(request, feed, wire=wire)
