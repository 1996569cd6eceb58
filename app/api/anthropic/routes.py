"""The Anthropic-compatible endpoints: ``POST /v1/messages`` and ``/v1/messages/count_tokens``,
for Claude Code and the ``anthropic`` SDKs (``ANTHROPIC_BASE_URL=http://<service>``).

Each message request goes through the one answer pipeline (``app.api.pipeline``): counted like
any other, mapped onto the native request (``app.api.anthropic.requests``) and opened in the
same registry, so it shares the cache and running generations with every surface; only the
wire differs (``app.api.anthropic.wire``). Query parameters (Claude Code's ``?beta=true``) and
the ``anthropic-version`` and ``anthropic-beta`` headers are accepted and change nothing.

Thinking asked of a model that cannot think is served without it: Claude Code asks for
thinking on every request, and Ollama refuses ``think`` for such a model. Whether the model can
is what its host's ``/api/show`` lists (``Hosts.can_think``, kept a minute).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.access.models import resolved, shown
from app.api import pipeline
from app.api.anthropic import requests, wire
from app.api.anthropic.wire import error_response
from app.api.pipeline import Asked, Rendering
from app.api.routing import SurfaceRoute
from app.lifespan import State
from app.responses import JSONBody


async def _asked(data: Mapping[str, Any], request: Request[State]) -> Asked:
    mapped = requests.parse(data)
    can_think = None
    if mapped.thinking == "on":
        model = mapped.native.get("model", request.state["settings"].default_model)
        can_think = await request.state["hosts"].can_think(str(model))
    completion = mapped.completion(request.state["settings"].default_model, can_think=can_think)
    show, model = mapped.show_thinking, shown(request.scope, completion.model)
    rendering = Rendering(
        body=lambda generation, answer: wire.message(generation, answer, show_thinking=show),
        wire=lambda generation: wire.MessageWire(model, show_thinking=show),
        media_type=wire.MEDIA_TYPE,
        ping=wire.PING,
    )
    return Asked(completion, rendering)


async def messages(request: Request[State]) -> Response:
    """``POST /v1/messages``."""
    return await pipeline.complete(request, _asked)


async def count_tokens(request: Request[State]) -> Response:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``, as the engine serving the
    model counts them where it can (vLLM, llama.cpp), else an estimate
    (``requests.estimate_tokens`` says how). Counted against no quota: it generates nothing."""
    mapped = requests.parse(resolved(request.scope, await pipeline.read_object(request)),
                            counting=True)  # fmt: skip
    completion = mapped.completion(request.state["settings"].default_model, can_think=False)
    counted = await request.state["hosts"].count_tokens(completion)
    return JSONBody({"input_tokens": requests.estimate_tokens(mapped) if counted is None
                     else counted})  # fmt: skip


ROUTES = [
    SurfaceRoute("/v1/messages", messages, errors=error_response, methods=["POST"]),
    SurfaceRoute("/v1/messages/count_tokens", count_tokens, errors=error_response,
                 methods=["POST"]),
]  # fmt: skip
