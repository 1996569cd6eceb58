"""The answer pipeline every surface runs, written once: count the request, read its body, let
the surface parse it, open the generation, and answer as one JSON body or as a stream in the
surface's wire; and the same for embeddings. A surface gives only its parse and its rendering.

Whatever the request owes its quotas is the pipeline's (``app.access.admission.Admission``): it
puts the quotas' headers on every answer of a counted request, errors included, and gives
back what no generation took, once the answer is built. Every feed it opens it closes once the
response is over (or never started): nowhere else. A key's request is added to its use
(``app.store.usage``) once it has a feed or an embedding, which a resume never counts again.

A stream holds its response until the generation's first token, error or the first heartbeat,
whichever comes first (``docs/api.md``, "When the response starts"): an error the engine reports
in that time still gets its own HTTP status, while a long model load commits to a 200 and keeps
the connection alive with pings. From then on failures are the wire's error event. A cache hit
is sent as one plain response body: it is complete, so nothing needs pinging or watching.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from app.access.admission import Admission, Admitted
from app.access.identity import identity
from app.access.models import resolved, shown
from app.access.placement import placed
from app.api.relay import SSE_HEADERS, SSE_MEDIA_TYPE, SSE_PING, RelayResponse
from app.errors import InvalidJSON, ServiceError, TooLarge
from app.generations.answer import Answer
from app.generations.embeddings import EmbeddingRequest
from app.generations.feeds import CachedFeed, Feed, XCache
from app.generations.request import CompletionRequest
from app.generations.wire import Wire
from app.lifespan import State
from app.ops import metrics
from app.ops.request_log import RequestFacts, facts
from app.responses import JSONBody
from app.settings import Settings
from app.store.usage import Counts

GENERATION_HEADER = "X-Generation-ID"
HOST_HEADER = "X-Upstream-Host"


@dataclass(frozen=True, slots=True)
class Rendering:
    """How a surface answers one request: ``body`` renders the whole answer as JSON, ``wire``
    makes a stream's wire (one per response), both given the generation's id; ``opening`` is
    what the stream says first (given the feed, the first token's index and whether the
    client's generation was gone)."""

    body: Callable[[str, Answer], dict[str, Any]]
    wire: Callable[[str], Wire]
    media_type: str = SSE_MEDIA_TYPE
    ping: bytes = SSE_PING  # b"": no heartbeat, where the format has no form for one
    opening: Callable[[Feed, int, bool], bytes] = lambda feed, index, reset: b""


@dataclass(frozen=True, slots=True)
class Asked:
    """A surface's parse of one request: the generation it asks for, how to answer it, and
    whatever else its own answer (``respond``) needs of the request."""

    completion: CompletionRequest
    rendering: Rendering
    context: object = None


# a surface's parse of a body (an object) or a query string; the request gives its state (the
# settings, and what a surface may need to read before it knows what is asked)
Parse = Callable[[Mapping[str, Any], Request[State]], Awaitable[Asked]]
Respond = Callable[[Request[State], Feed, Admitted, Asked], Awaitable[Response]]


async def complete(
    request: Request[State],
    parse: Parse,
    *,
    query: Parse | None = None,
    resumable: bool = False,
    respond: Respond | None = None,
) -> Response:
    """Answers a request for a generation: its body parsed by ``parse``, or for a ``GET`` or
    ``HEAD`` its query string by ``query``; ``resumable``: ``Last-Event-ID`` may continue a
    stream (``app.access.admission``); ``respond``: another answer than the JSON body or
    stream."""
    asked: Asked | None = None

    async def read() -> CompletionRequest:
        nonlocal asked
        settings, asking = request.state["settings"], identity(request.scope)
        if request.method == "POST" or query is None:
            data = await read_object(request)
            parsed = await parse(resolved(request.scope, data), request)
        else:
            parsed = await query(resolved(request.scope, request.query_params), request)
        completion = placed(parsed.completion, request.headers, asking, settings)
        asked = replace(parsed, completion=completion)
        return completion

    async with _owning(request) as admission:
        admitted = await admission.admit(read, resumable=resumable)
        assert asked is not None  # admit has read the request
        rendering = asked.rendering
        if request.method == "HEAD":
            return Response(headers=SSE_HEADERS, media_type=rendering.media_type)
        if admitted.over:
            return Response(status_code=204)
        if admitted.resumed is not None:
            facts(request.scope).resumed = True
            return await stream(request, admitted.resumed, admitted.index, rendering)
        feed = await request.state["registry"].open(admitted.completion, admission.account)
        _used(admission, admitted.completion.model, feed.x_cache)
        response = await (respond or answer)(request, feed, admitted, asked)
        response.headers.update(admission.headers)
        return response


async def answer(request: Request[State], feed: Feed, admitted: Admitted, asked: Asked
                 ) -> Response:  # fmt: skip
    """The answer a surface gives unless it says otherwise: the whole answer as one JSON body,
    or the stream."""
    rendering = asked.rendering
    if not admitted.completion.stream:
        return await _closing(feed, lambda: _json(request, feed, rendering))
    return await stream(request, feed, 0, rendering, reset=admitted.reset)


Render = Callable[[dict[str, Any]], dict[str, Any]]  # an engine's embeddings, as a surface's
EmbedParse = Callable[[Mapping[str, Any], Settings], tuple[EmbeddingRequest, Render]]


async def embed(request: Request[State], parse: EmbedParse) -> Response:
    """Answers an embedding request: ``parse`` gives what to ask, and how to render the
    engine's answer. Embeddings take no concurrency ticket."""
    settings = request.state["settings"]

    async def read() -> tuple[EmbeddingRequest, Render]:
        data = await read_object(request)
        return parse(resolved(request.scope, data), settings)

    async with _owning(request) as admission:
        asked, render = await admission.counted(read, lambda pair: pair[0].model, generates=False)
        assert admission.account is not None  # counted
        answer, x_cache = await request.state["embedder"].embed(asked, admission.account)
        _used(admission, asked.model, x_cache, int(answer.get("prompt_eval_count") or 0))
        body = render(answer)
        if "model" in body:  # an alias, as asked; a copy, for the answer may be a cached one's
            body = {**body, "model": shown(request.scope, body["model"])}
        return JSONBody(body, headers={**provenance(x_cache), **admission.headers})


def _used(admission: Admission, model: str, x_cache: XCache, input_tokens: int = 0) -> None:
    """Adds an answered request to its key's use (``app.store.usage``), here and not where a
    feed is recorded, which a replay of a stream (a resume, an events URL) also is. A hit or a
    join is a cache hit and adds no tokens; a generation's are added when it ends."""
    account = admission.account
    if account is not None and account.usage is not None:
        hit = x_cache in ("HIT", "JOINED")
        used = Counts(requests=1, cache_hits=int(hit), input_tokens=0 if hit else input_tokens)
        account.usage.add(account.client, model, used)


@asynccontextmanager
async def _owning(request: Request[State]) -> AsyncIterator[Admission]:
    """The request's admission, owned here: the quotas' headers go on the response the body
    returns, or on the error it raises; what no generation took is given back at the end."""
    admission = Admission(request)
    try:
        yield admission
    except ServiceError as exc:
        exc.headers.update(admission.headers)
        raise
    finally:
        admission.release()


async def read_object(request: Request[State]) -> dict[str, Any]:
    """The body as a JSON object, refusing more than ``MAX_BODY_BYTES`` before reading it all;
    on every surface alike."""
    limit_bytes = request.state["settings"].max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise TooLarge(f"The request body is larger than {limit_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit_bytes:
            raise TooLarge(f"The request body is larger than {limit_bytes} bytes.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidJSON("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    return data


def provenance(x_cache: XCache, generation: str | None = None, host: str | None = None
               ) -> dict[str, str]:  # fmt: skip
    """The headers of every surface's answer: where it came from, the generation's id (to
    follow or resume it at ``/v1/chats/generations/<id>/events``), and the host generating it
    when this worker placed it there (for debugging routing)."""
    headers: dict[str, str] = {"X-Cache": x_cache}
    if generation is not None:
        headers[GENERATION_HEADER] = generation
    if host is not None:
        headers[HOST_HEADER] = host
    return headers


def record(request: Request[State], feed: Feed) -> RequestFacts:
    """Notes where the answer came from, for the request's log line and metrics."""
    noted = facts(request.scope)
    noted.cache, noted.generation = feed.x_cache, feed.generation_id
    if feed.x_cache in ("HIT", "JOINED") and feed.trace:  # a span produced these tokens
        noted.produced_by = feed.trace
    metrics.CACHE.labels(feed.x_cache.lower()).inc()
    return noted


async def stream(request: Request[State], feed: Feed, index: int, rendering: Rendering, *,
                 reset: bool = False) -> Response:  # fmt: skip
    """The feed from token ``index`` in the surface's wire, after its opening: for a resume,
    or a generation's events URL, as for a new request."""
    head = rendering.opening(feed, index, reset)
    return await _closing(feed, lambda: _relay_response(request, feed, index, head, rendering))


async def _closing(feed: Feed, respond: Callable[[], Awaitable[Response]]) -> Response:
    """The response ``respond`` builds from ``feed``; the feed is closed once that response is
    over, or at once if there is none (an error before it began)."""
    try:
        response = await respond()
    except BaseException:
        await feed.aclose()
        raise
    response.background = BackgroundTask(feed.aclose)
    return response


async def _relay_response(request: Request[State], feed: Feed, index: int, head: bytes,
                          rendering: Rendering) -> Response:  # fmt: skip
    settings = request.state["settings"]
    noted = record(request, feed)
    wire = rendering.wire(feed.generation_id)
    ready = await feed.ready(settings.heartbeat_interval_seconds)
    headers = {**SSE_HEADERS, **provenance(feed.x_cache, feed.generation_id, feed.host)}
    error = feed.early_error()
    if error is not None:
        raise error
    if isinstance(feed, CachedFeed):
        replay = feed.replay(index, wire)
        noted.saw_tokens(replay.tokens)
        return Response(head + replay.data, headers=headers, media_type=rendering.media_type)
    first, head = (b"", head) if ready else (head + rendering.ping, b"")
    return RelayResponse(
        _relay(noted, feed, index, first, head, wire),
        headers=headers,
        ping_seconds=settings.heartbeat_interval_seconds,
        send_timeout_seconds=settings.send_timeout_seconds,
        drain=request.state["drain"],
        media_type=rendering.media_type,
        ping=rendering.ping,
    )


async def _relay(noted: RequestFacts, feed: Feed, index: int, first: bytes, head: bytes,
                 wire: Wire) -> AsyncGenerator[bytes]:  # fmt: skip
    """The stream: ``first`` at once (the head and a ping: nothing came within a heartbeat),
    else ``head`` with the first event; places in the GPU queue go before it (the
    generation's turn has not come yet)."""
    if first:
        yield first
    async for chunk in feed.chunks(index, wire):
        if chunk.queued:
            yield chunk.data
            continue
        yield head + chunk.data
        head = b""
        noted.saw_tokens(chunk.tokens)


async def _json(request: Request[State], feed: Feed, rendering: Rendering) -> Response:
    """Waits for the whole answer, or for the client to leave: then the feed closes (in
    ``_closing``) and a generation nobody else follows is cancelled, as for a stream."""
    record(request, feed)
    answer = asyncio.ensure_future(feed.answer())
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answer.done():
            answer.cancel()
    if not answer.done() or answer.cancelled():
        return Response(status_code=499)  # nobody reads it: the client has gone
    whole = answer.result()
    whole = replace(whole, model=shown(request.scope, whole.model))  # an alias, as asked
    body = rendering.body(feed.generation_id, whole)
    return JSONBody(body, headers=provenance(feed.x_cache, feed.generation_id, feed.host))


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has gone (its body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
