"""The generation endpoints and the model list.

A stream holds its response until the generation's first token, error or the first heartbeat,
whichever comes first (DESIGN.md, "When the response starts"): an error Ollama reports in that
time still gets its own HTTP status, while a long model load commits to a 200 and keeps the
connection alive with pings. From then on failures are ``error`` events. A cache hit is sent
as one plain response body: it is complete, so nothing needs pinging or watching.

``Last-Event-ID`` (any client may send it; ``EventSource`` does on reconnect): ``<g>.done`` or
``<g>.error`` answers ``204``, which stops an ``EventSource`` from reconnecting; ``<g>.<n>`` of a
generation that still exists continues with token ``n+1``; anything else is a fresh start, and
its ``start`` event says ``"reset": true`` when the client had a generation we no longer know.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from app import events, metrics
from app.cache import content_hash
from app.errors import InvalidJSON, NotFound, TooLarge
from app.feeds import CachedFeed, Feed
from app.lifespan import State
from app.middleware import DEFERRED, admit
from app.requestlog import RequestFacts, facts
from app.responses import NO_STORE, JSONBody
from app.schema import CompletionRequest, parse_body, parse_query
from app.shutdown import Drain
from app.streams import EventStream

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream"
TOKEN_EVENT = b"\nevent: token\n"  # data lines are one-line JSON, so this is never inside one


async def generate(request: Request[State]) -> Response:
    """``POST`` (JSON body) or ``GET``/``HEAD`` (query string) ``/v1/chats/generate``."""
    completion = await _completion(request)
    if request.method == "HEAD":
        return Response(headers=SSE_HEADERS, media_type=SSE_MEDIA_TYPE)
    generations = request.state["generations"]
    last = _last_event_id(request)
    if last is not None and completion.stream:
        generation_id, position = last
        if position in ("done", "error"):
            return Response(status_code=204)
        resumed = await generations.find(generation_id, content_hash(completion))
        if resumed is not None:
            return await _stream(request, resumed, int(position) + 1)
    if request.scope.get(DEFERRED):  # let through as a resume, but it starts something new
        await admit(request.scope, fail_open=request.state["settings"].rate_limit_fail_open)
    feed = await generations.open(completion)
    if not completion.stream:
        return await _json(request, feed)
    return await _stream(request, feed, 0, reset=last is not None)


async def create_generation(request: Request[State]) -> Response:
    """``POST /v1/chats/generations``: starts (or joins, or finds cached) a generation."""
    completion = await _completion(request)
    feed = await request.state["generations"].open(completion)
    _record(request, feed)
    await feed.aclose()  # nobody follows yet: RESUME_GRACE counts from now
    url = f"/v1/chats/generations/{feed.generation_id}/events"
    body = {"generation": feed.generation_id, "events": url, "cached": feed.x_cache == "HIT"}
    return JSONBody(body, status_code=202, headers={"Location": url, "X-Cache": feed.x_cache})


async def generation_events(request: Request[State]) -> Response:
    """``GET /v1/chats/generations/<id>/events``: the generation's stream, from the start or
    from ``Last-Event-ID``; reconnects need nothing but the URL."""
    generation_id = request.path_params["generation"]
    index = 0
    last = _last_event_id(request)
    if last is not None and last[0] == generation_id:
        if last[1] in ("done", "error"):
            return Response(status_code=204)
        index = int(last[1]) + 1
    if request.method == "HEAD":
        return Response(headers=SSE_HEADERS, media_type=SSE_MEDIA_TYPE)
    feed = await request.state["generations"].find(generation_id)
    if feed is None:
        raise NotFound("No such generation, or it has expired.")
    return await _stream(request, feed, index)


async def stop_generation(request: Request[State]) -> Response:
    """``DELETE /v1/chats/generations/<id>``: ends it for every client, wherever it runs."""
    if not await request.state["generations"].stop(request.path_params["generation"]):
        raise NotFound("No such generation, or it has expired.")
    return Response(status_code=204)


async def models(request: Request[State]) -> Response:
    """``GET /v1/models``: the models Ollama has."""
    return JSONBody({"models": await request.state["ollama"].check()}, headers=NO_STORE)


async def _stream(request: Request[State], feed: Feed, index: int, *, reset: bool = False
                  ) -> Response:  # fmt: skip
    """The feed as SSE from token ``index`` (a resume when above 0: no ``start`` again)."""
    settings = request.state["settings"]
    record = _record(request, feed)
    headers = {**SSE_HEADERS, "X-Cache": feed.x_cache}
    try:
        ready = await feed.ready(settings.heartbeat_interval_seconds)
        error = feed.early_error()
        if error is not None:
            raise error
    except BaseException:
        await feed.aclose()
        raise
    cached = feed.x_cache == "HIT"
    opening = b"retry: %d\n\n" % events.RETRY_MILLISECONDS
    if index == 0:
        opening = events.opening(feed.generation_id, feed.model, cached=cached, reset=reset)
    if isinstance(feed, CachedFeed):
        body = opening + feed.replay(index)
        record.saw_tokens(body.count(TOKEN_EVENT))
        return Response(body, headers=headers, media_type=SSE_MEDIA_TYPE)
    first = opening if ready else opening + events.PING
    return EventStream(
        _relay(request.state["drain"], record, feed, index, first),
        headers=headers,
        ping=settings.heartbeat_interval_seconds,
        sep="\n",
        send_timeout=settings.send_timeout_seconds,
        background=BackgroundTask(feed.aclose),  # also when the stream never got to start
    )


async def _relay(
    drain: Drain, record: RequestFacts, feed: Feed, index: int, opening: bytes
) -> AsyncIterator[bytes]:
    drain.stream_opened()
    metrics.OPEN_STREAMS.inc()
    try:
        yield opening
        async for chunk in feed.events(index):
            yield chunk
            record.saw_tokens(chunk.count(TOKEN_EVENT))
    finally:
        drain.stream_closed()
        metrics.OPEN_STREAMS.dec()


def _record(request: Request[State], feed: Feed) -> RequestFacts:
    """Notes where the answer came from, for the request's log line and metrics."""
    record = facts(request.scope)
    record.cache, record.generation = feed.x_cache, feed.generation_id
    metrics.CACHE.labels(feed.x_cache.lower()).inc()
    return record


async def _json(request: Request[State], feed: Feed) -> Response:
    _record(request, feed)
    try:
        return JSONBody(await feed.result(), headers={"X-Cache": feed.x_cache})
    finally:
        await feed.aclose()


async def _completion(request: Request[State]) -> CompletionRequest:
    settings = request.state["settings"]
    if request.method == "POST":
        data = await _read_json(request, settings.max_body_bytes)
        return parse_body(data, settings.default_model)
    return parse_query(request.query_params, settings.default_model)


def _last_event_id(request: Request[State]) -> tuple[str, str] | None:
    return events.parse_event_id(request.headers.get("last-event-id", ""))


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
