"""The native API's endpoints (``docs/api.md``): ``/v1/chats/generate`` (``POST``, and ``GET``
and ``HEAD`` from a query string), a generation as a resource (``POST /v1/chats/generations``,
its events URL, ``DELETE``), each through the one answer pipeline (``app.api.pipeline``) with
the native request (``app.generations.request``) and events (``app.api.native.events``).
Errors are RFC 9457 problem documents (``app.responses.problem``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.access.admission import Admitted
from app.access.models import shown
from app.api import pipeline
from app.api.native import events
from app.api.native.events import NATIVE, NativeWire
from app.api.pipeline import Asked, Rendering
from app.api.relay import SSE_HEADERS, SSE_MEDIA_TYPE
from app.api.routing import SurfaceRoute
from app.errors import NotFound
from app.generations.feeds import Feed
from app.generations.request import CompletionRequest, parse_body, parse_query
from app.generations.resume import resumption
from app.lifespan import State
from app.responses import JSONBody, problem


def _opening(feed: Feed, index: int, reset: bool, *, model: str | None = None) -> bytes:
    """A stream's first bytes: the ``start`` event, or for a resume only the reconnect delay,
    which rides in its first event; ``model``: the alias the client asked for."""
    if index:
        return events.RETRY
    return events.opening(feed.generation_id, model or feed.model, cached=feed.x_cache == "HIT",
                          reset=reset)  # fmt: skip


RENDERING = Rendering(body=lambda generation, answer: events.answer_body(answer),
                      wire=lambda generation: NATIVE, opening=_opening)  # fmt: skip


def _asked(completion: CompletionRequest, request: Request[State]) -> Asked:
    model = shown(request.scope, completion.model)
    if model == completion.model:
        return Asked(completion, RENDERING)
    aliased = NativeWire(model)
    return Asked(completion, replace(RENDERING, opening=partial(_opening, model=model),
                                     wire=lambda generation: aliased))  # fmt: skip


async def _body(data: Mapping[str, Any], request: Request[State]) -> Asked:
    return _asked(parse_body(data, request.state["settings"].default_model), request)


async def _query(params: Mapping[str, Any], request: Request[State]) -> Asked:
    return _asked(parse_query(params, request.state["settings"].default_model), request)


async def generate(request: Request[State]) -> Response:
    """``POST`` (JSON body) or ``GET``/``HEAD`` (query string) ``/v1/chats/generate``."""
    return await pipeline.complete(request, _body, query=_query, resumable=True)


async def create_generation(request: Request[State]) -> Response:
    """``POST /v1/chats/generations``: starts (or joins, or finds cached) a generation."""
    return await pipeline.complete(request, _body, respond=_created)


async def _created(request: Request[State], feed: Feed, admitted: Admitted,
                   asked: Asked) -> Response:  # fmt: skip
    pipeline.record(request, feed)
    url = f"/v1/chats/generations/{feed.generation_id}/events"
    body = {"generation": feed.generation_id, "events": url, "cached": feed.x_cache == "HIT"}
    headers = {"Location": url, **pipeline.provenance(feed.x_cache, feed.generation_id)}
    await feed.aclose()  # its one owner: nobody follows yet, so RESUME_GRACE counts from now
    return JSONBody(body, status_code=202, headers=headers)


async def generation_events(request: Request[State]) -> Response:
    """``GET /v1/chats/generations/<id>/events``: the generation's stream, from the start or
    from ``Last-Event-ID``; reconnects need nothing but the URL."""
    generation_id = request.path_params["generation"]
    index = 0
    last = resumption(request.headers.get("last-event-id", ""))
    if last is not None and last.generation == generation_id:
        if last.next_index is None:
            return Response(status_code=204)
        index = last.next_index
    if request.method == "HEAD":
        return Response(headers=SSE_HEADERS, media_type=SSE_MEDIA_TYPE)
    feed = await request.state["registry"].find(generation_id)
    if feed is None:
        raise NotFound("No such generation, or it has expired.")
    return await pipeline.stream(request, feed, index, RENDERING)


async def stop_generation(request: Request[State]) -> Response:
    """``DELETE /v1/chats/generations/<id>``: ends it for every client, wherever it runs."""
    if not await request.state["registry"].stop(request.path_params["generation"]):
        raise NotFound("No such generation, or it has expired.")
    return Response(status_code=204)


ROUTES = [
    SurfaceRoute("/v1/chats/generate", generate, errors=problem, methods=["GET", "POST"]),
    SurfaceRoute("/v1/chats/generations", create_generation, errors=problem, methods=["POST"]),
    # an id is unguessable: whoever holds one was given it, so these need no key (an
    # EventSource, which cannot send one, follows what a fetch with the key started)
    SurfaceRoute("/v1/chats/generations/{generation}/events", generation_events, errors=problem,
                 keyed=False),
    SurfaceRoute("/v1/chats/generations/{generation}", stop_generation, errors=problem,
                 methods=["DELETE"], keyed=False),
]  # fmt: skip
