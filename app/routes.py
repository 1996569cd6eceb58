"""The generation endpoints and the model list.

``/v1/chats/generate`` holds its response until Ollama's first token, error or the first
heartbeat, whichever comes first (DESIGN.md, "When the response starts"): an error Ollama reports
in that time still gets its own HTTP status, while a long model load commits to a 200 and keeps
the connection alive with pings. From then on failures are ``error`` events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from app import events
from app.completions import Generation
from app.errors import InvalidJSON, TooLarge
from app.lifespan import State
from app.responses import NO_STORE, JSONBody
from app.schema import CompletionRequest, parse_body, parse_query
from app.settings import Settings

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def generate(request: Request[State]) -> Response:
    """``POST`` (JSON body) or ``GET``/``HEAD`` (query string) ``/v1/chats/generate``."""
    settings = request.state["settings"]
    if request.method == "POST":
        data = await _read_json(request, settings.max_body_bytes)
        completion = parse_body(data, settings.default_model)
    else:
        completion = parse_query(request.query_params, settings.default_model)
    if request.method == "HEAD":
        return Response(headers=SSE_HEADERS, media_type="text/event-stream")
    generation = request.state["generations"].start(completion)
    try:
        return await _respond(generation, completion, settings)
    except BaseException:
        generation.cancel()
        raise


async def models(request: Request[State]) -> Response:
    """``GET /v1/models``: the models Ollama has."""
    return JSONBody({"models": await request.state["ollama"].models()}, headers=NO_STORE)


async def _respond(
    generation: Generation, completion: CompletionRequest, settings: Settings
) -> Response:
    if not completion.stream:
        await generation.wait_ended()
        if generation.error is not None:
            raise generation.error
        return JSONBody(generation.result(cached=False))
    with anyio.move_on_after(settings.heartbeat_interval_seconds) as waiting:
        await generation.wait_beyond(0)
    if generation.error is not None and not generation.payloads:
        raise generation.error
    return EventSourceResponse(
        _stream(generation, heartbeat_due=waiting.cancelled_caught),
        headers={**SSE_HEADERS, "X-Cache": "MISS"},
        ping=settings.heartbeat_interval_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="ping", sep="\n"),
        sep="\n",
    )


async def _stream(generation: Generation, *, heartbeat_due: bool) -> AsyncIterator[bytes]:
    opening = events.opening(generation.id, generation.request.model, cached=False)
    yield opening + events.PING if heartbeat_due else opening
    async for chunk in generation.follow(0):
        yield chunk


async def _read_json(request: Request[State], limit_bytes: int) -> object:
    """The body as JSON, refusing more than ``limit_bytes`` before reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise TooLarge(f"The request body is larger than {limit_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit_bytes:
            raise TooLarge(f"The request body is larger than {limit_bytes} bytes.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidJSON("The request body is not valid JSON.") from None
