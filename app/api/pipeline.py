"""The native generation endpoints, and the responses every surface's endpoints answer with.

A stream holds its response until the generation's first token, error or the first heartbeat,
whichever comes first (DESIGN.md, "When the response starts"): an error Ollama reports in that
time still gets its own HTTP status, while a long model load commits to a 200 and keeps the
connection alive with pings. From then on failures are ``error`` events. A cache hit is sent
as one plain response body: it is complete, so nothing needs pinging or watching.

Who is let in, resumed or counted is ``app.access.admission``'s decision. Every feed a route opens
is closed by ``_answer``, once its response is over (or never started): nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from app.access.admission import admit
from app.api.relay import RelayResponse
from app.errors import NotFound
from app.generations import wire as events
from app.generations.feeds import CachedFeed, Feed
from app.generations.wire import Wire
from app.lifespan import State
from app.ops import metrics
from app.ops.request_log import RequestFacts, facts
from app.responses import JSONBody

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream"
GENERATION_HEADER = "X-Generation-ID"


async def generate(request: Request[State]) -> Response:
    """``POST`` (JSON body) or ``GET``/``HEAD`` (query string) ``/v1/chats/generate``."""
    admitted = await admit(request, resumable=True)
    if request.method == "HEAD":
        return Response(headers=SSE_HEADERS, media_type=SSE_MEDIA_TYPE)
    if admitted.over:
        return Response(status_code=204)
    if admitted.resumed is not None:
        return await _stream(request, admitted.resumed, admitted.index)
    feed = await request.state["registry"].open(admitted.completion, admitted.account)
    if not admitted.completion.stream:
        return await respond_json(request, feed, lambda answer: answer)
    return await _stream(request, feed, 0, reset=admitted.reset)


async def create_generation(request: Request[State]) -> Response:
    """``POST /v1/chats/generations``: starts (or joins, or finds cached) a generation."""
    admitted = await admit(request, resumable=False)
    feed = await request.state["registry"].open(admitted.completion, admitted.account)
    _record(request, feed)
    url = f"/v1/chats/generations/{feed.generation_id}/events"
    body = {"generation": feed.generation_id, "events": url, "cached": feed.x_cache == "HIT"}
    headers = {"Location": url, **_about(feed)}
    await feed.aclose()  # its one owner: nobody follows yet, so RESUME_GRACE counts from now
    return JSONBody(body, status_code=202, headers=headers)


async def generation_events(request: Request[State]) -> Response:
    """``GET /v1/chats/generations/<id>/events``: the generation's stream, from the start or
    from ``Last-Event-ID``; reconnects need nothing but the URL."""
    generation_id = request.path_params["generation"]
    index = 0
    last = events.parse_event_id(request.headers.get("last-event-id", ""))
    if last is not None and last.generation == generation_id:
        if last.index is None:
            return Response(status_code=204)
        index = last.index + 1
    if request.method == "HEAD":
        return Response(headers=SSE_HEADERS, media_type=SSE_MEDIA_TYPE)
    feed = await request.state["registry"].find(generation_id)
    if feed is None:
        raise NotFound("No such generation, or it has expired.")
    return await _stream(request, feed, index)


async def stop_generation(request: Request[State]) -> Response:
    """``DELETE /v1/chats/generations/<id>``: ends it for every client, wherever it runs."""
    if not await request.state["registry"].stop(request.path_params["generation"]):
        raise NotFound("No such generation, or it has expired.")
    return Response(status_code=204)


async def _answer(feed: Feed, respond: Callable[[], Awaitable[Response]]) -> Response:
    """The response ``respond`` builds from ``feed``; the feed is closed once that response is
    over, or at once if there is none (an error before it began)."""
    try:
        response = await respond()
    except BaseException:
        await feed.aclose()
        raise
    response.background = BackgroundTask(feed.aclose)
    return response


async def _stream(request: Request[State], feed: Feed, index: int, *, reset: bool = False
                  ) -> Response:  # fmt: skip
    """The feed as native SSE from token ``index`` (a resume when above 0: no ``start`` again,
    and the reconnect delay rides in the first event)."""
    head = events.RETRY
    if index == 0:
        head = events.opening(feed.generation_id, feed.model, cached=feed.x_cache == "HIT",
                              reset=reset)  # fmt: skip
    return await respond_stream(request, feed, index, head=head)


async def respond_stream(
    request: Request[State],
    feed: Feed,
    index: int = 0,
    *,
    head: bytes = b"",
    wire: Wire = events.NATIVE,
    media_type: str = SSE_MEDIA_TYPE,
    ping: bytes = events.PING,
) -> Response:
    """The feed from token ``index`` in ``wire`` after ``head``, for any surface: held until
    the first token, error or heartbeat (the module docstring); closed by ``_answer``."""
    return await _answer(feed, lambda: _event_stream(request, feed, index, head, wire,
                                                     media_type, ping))  # fmt: skip


async def respond_json(request: Request[State], feed: Feed,
                       body: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:  # fmt: skip
    """The whole completion as JSON, shaped by ``body``; closed by ``_answer``."""
    return await _answer(feed, lambda: _json(request, feed, body))


async def _event_stream(
    request: Request[State],
    feed: Feed,
    index: int,
    head: bytes,
    wire: Wire,
    media_type: str,
    ping: bytes,
) -> Response:
    settings = request.state["settings"]
    record = _record(request, feed)
    headers = {**SSE_HEADERS, **_about(feed)}
    ready = await feed.ready(settings.heartbeat_interval_seconds)
    error = feed.early_error()
    if error is not None:
        raise error
    if isinstance(feed, CachedFeed):
        replay = feed.replay(index, wire)
        record.saw_tokens(replay.tokens)
        return Response(head + replay.data, headers=headers, media_type=media_type)
    return RelayResponse(
        _relay(record, feed, index, b"" if ready else head + ping, head if ready else b"", wire),
        headers=headers,
        ping_seconds=settings.heartbeat_interval_seconds,
        send_timeout_seconds=settings.send_timeout_seconds,
        drain=request.state["drain"],
        media_type=media_type,
        ping=ping,
    )


async def _relay(record: RequestFacts, feed: Feed, index: int, first: bytes, head: bytes,
                 wire: Wire) -> AsyncGenerator[bytes]:  # fmt: skip
    """The stream: ``first`` at once (the head and a ping: nothing came within a heartbeat),
    else ``head`` with the first event; places in the GPU queue go before it (the
    generation's turn has not come yet)."""
    if first:
        yield first
    async for chunk in feed.events(index, wire):
        if chunk.queued:
            yield chunk.data
            continue
        yield head + chunk.data
        head = b""
        record.saw_tokens(chunk.tokens)


def _about(feed: Feed) -> dict[str, str]:
    """The headers every surface's answer carries: where it came from, and the generation's
    id, to follow or resume it at ``/v1/chats/generations/<id>/events``."""
    return {"X-Cache": feed.x_cache, GENERATION_HEADER: feed.generation_id}


def _record(request: Request[State], feed: Feed) -> RequestFacts:
    """Notes where the answer came from, for the request's log line and metrics."""
    record = facts(request.scope)
    record.cache, record.generation = feed.x_cache, feed.generation_id
    metrics.CACHE.labels(feed.x_cache.lower()).inc()
    return record


async def _json(request: Request[State], feed: Feed,
                body: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:  # fmt: skip
    """Waits for the whole completion, or for the client to leave: then the feed closes (in
    ``_answer``) and a generation nobody else follows is cancelled, as for a stream."""
    _record(request, feed)
    result = asyncio.ensure_future(feed.result())
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait((result, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not result.done():
            result.cancel()
    if not result.done() or result.cancelled():
        return Response(status_code=499)  # nobody reads it: the client has gone
    return JSONBody(body(result.result()), headers=_about(feed))


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has gone (its body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
