"""OpenAI's Responses API: ``POST /v1/responses`` through the one answer pipeline
(``app.api.pipeline``), and the stored responses every replica can continue
(``previous_response_id``), retrieve, stream again from any event (``starting_after``), cancel
and delete.

A stored response (``store``, the default) is a record in Redis for ``RESPONSES_TTL``
(``app.store.responses``): the request's side of it (its id, creation time, model, the fields
the object echoes, the conversation so far) is written when it is created; its output is its
generation's answer, read from the generation (running here or elsewhere, or from the cache)
when it is asked for, and kept with the record from the first time it is seen finished. A
background response (``background: true``) is answered at once, ``queued``, and followed by
the worker itself to its end, whatever its clients do; its record is finished then.

A stream is resumed from the generation's events (the machinery of ``Last-Event-ID``), so it
is the same events with the same sequence numbers, for as long as the generation's events or
its cache entry last.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.access.admission import Admitted
from app.access.models import shown
from app.api import pipeline
from app.api.openai.requests import placement
from app.api.openai.responses import requests, wire
from app.api.openai.responses.requests import ResponsesRequest, conversation
from app.api.openai.responses.wire import EventWire, Items
from app.api.openai.wire import error_response
from app.api.pipeline import Asked, Rendering
from app.api.routing import SurfaceRoute
from app.errors import InvalidRequest, NotFound, ServiceError
from app.generations.answer import Answer
from app.generations.feeds import Feed
from app.generations.feeds import outcome as feed_outcome
from app.lifespan import State
from app.responses import NO_STORE, JSONBody
from app.store.client import RedisUnavailable

ENDED = ("completed", "incomplete", "failed", "cancelled")


def _base(response_id: str, created_at: int, model: str, echo: Mapping[str, Any]
          ) -> dict[str, Any]:  # fmt: skip
    """The response object as created: no output yet."""
    return {"id": response_id, "object": "response", "created_at": created_at,
            "status": "in_progress", "error": None, "incomplete_details": None, "model": model,
            "output": [], "usage": None, **echo}  # fmt: skip


def _rendering(created_at: int, model: str, echo: Mapping[str, Any], items: Items, *,
               skip_through: int = -1) -> Rendering:  # fmt: skip
    def base(generation: str) -> dict[str, Any]:
        return _base(wire.response_id(generation), created_at, model, echo)

    def body(generation: str, answer: Answer) -> dict[str, Any]:
        return wire.finished(base(generation), items.output(generation, answer), answer.stats)

    return Rendering(
        body=body,
        wire=lambda generation: EventWire(base(generation), items, skip_through=skip_through),
        media_type=wire.MEDIA_TYPE,
    )


async def _asked(data: Mapping[str, Any], request: Request[State]) -> Asked:
    mapped = requests.parse(data)
    settings = request.state["settings"]
    history: list[dict[str, Any]] = []
    if mapped.previous_response_id is not None:
        history = await _history(request, mapped.previous_response_id)
    model = mapped.model or settings.default_model
    can_think = None
    if mapped.thinking == "on":
        can_think = await request.state["hosts"].can_think(model)
    completion = mapped.completion(history, settings.default_model, can_think=can_think)
    completion = replace(completion, **placement(data))
    items = Items(mapped.custom_tools, mapped.namespaces)
    created = _Created(mapped, history, int(time.time()))
    rendering = _rendering(created.at, shown(request.scope, completion.model), mapped.echo, items)
    return Asked(completion, rendering, created)


@dataclass(frozen=True, slots=True)
class _Created:
    """What storing a new response needs, beside its generation: the request, the conversation
    it continued, and when it was made (its events say the same)."""

    request: ResponsesRequest
    history: list[dict[str, Any]]
    at: int


async def _history(request: Request[State], previous: str) -> list[dict[str, Any]]:
    """The conversation a previous response continues: its own, then its answer."""
    record = await _load(request, previous, field="previous_response_id")
    response = await _resolved(request, record)
    if response["status"] not in ENDED:
        raise InvalidRequest(f"Response {previous} is still in progress.",
                             {"previous_response_id": "is still in progress"})  # fmt: skip
    return [*record["history"], *conversation(response["output"])]


async def create(request: Request[State]) -> Response:
    """``POST /v1/responses``."""
    return await pipeline.complete(request, _asked, respond=_created)


async def _created(request: Request[State], feed: Feed, admitted: Admitted,
                   asked: Asked) -> Response:  # fmt: skip
    """Stores the response (unless ``store`` is false) and answers: at once with a queued
    response for a background one, else as the pipeline does."""
    created = asked.context
    assert isinstance(created, _Created)
    mapped, created_at = created.request, created.at
    generation = feed.generation_id
    response_id = wire.response_id(generation)
    record: dict[str, Any] = {"id": response_id, "generation": generation,
                              "created_at": created_at,
              "model": shown(request.scope, admitted.completion.model), "echo": mapped.echo,
              "history": [*created.history, *mapped.messages],
              "custom_tools": sorted(mapped.custom_tools), "namespaces": mapped.namespaces,
              "final": None}  # fmt: skip
    if mapped.store:
        await _save(request, record)
    if not mapped.background:
        return await pipeline.answer(request, feed, admitted, asked)
    pipeline.record(request, feed)

    async def finish(outcome: Answer | ServiceError) -> None:
        if mapped.store:
            with contextlib.suppress(RedisUnavailable):
                await _save(request, {**record, "final": _final(record, outcome)})

    request.state["registry"].keep(feed, finish)
    queued = {**_base(response_id, created_at, record["model"], mapped.echo), "status": "queued"}
    return JSONBody(queued, headers=pipeline.provenance(feed.x_cache, generation))


def _final(record: Mapping[str, Any], outcome: Answer | ServiceError) -> dict[str, Any]:
    """The finished response of ``record``, given its generation's outcome."""
    base = _base(record["id"], record["created_at"], record["model"], record["echo"])
    if isinstance(outcome, ServiceError):
        status = "cancelled" if outcome.code == "cancelled" else "failed"
        return {**base, "status": status, "error": wire.failure(outcome)}
    items = Items(frozenset(record["custom_tools"]), record["namespaces"])
    return wire.finished(base, items.output(record["generation"], outcome), outcome.stats)


async def _resolved(request: Request[State], record: dict[str, Any]) -> dict[str, Any]:
    """The response object as it stands: final once its generation has ended (kept with the
    record from then on), else in progress."""
    if record["final"] is not None:
        return dict(record["final"])
    base = _base(record["id"], record["created_at"], record["model"], record["echo"])
    feed = await request.state["registry"].find(record["generation"])
    if feed is None:  # its events and its cache entry have expired before it was asked for
        gone = NotFound("The output of this response is no longer kept.")
        return {**base, "status": "failed", "error": wire.failure(gone)}
    try:
        if not feed.ended:
            return base
        outcome = await feed_outcome(feed)
    finally:
        await feed.aclose()
    final = _final(record, outcome)
    with contextlib.suppress(RedisUnavailable):
        await _save(request, {**record, "final": final})
    return final


async def retrieve(request: Request[State]) -> Response:
    """``GET /v1/responses/{id}``, or with ``stream=true`` its events again, after
    ``starting_after`` if given."""
    record = await _load(request, request.path_params["response"])
    if request.query_params.get("stream") != "true":
        return JSONBody(await _resolved(request, record), headers=NO_STORE)
    after = request.query_params.get("starting_after", "-1")
    if not after.lstrip("-").isdigit():
        raise InvalidRequest("starting_after must be a sequence number.",
                             {"starting_after": "must be an integer"})  # fmt: skip
    feed = await request.state["registry"].find(record["generation"])
    if feed is None:
        raise NotFound("The events of this response are no longer kept.")
    items = Items(frozenset(record["custom_tools"]), record["namespaces"])
    rendering = _rendering(record["created_at"], record["model"], record["echo"], items,
                           skip_through=int(after))  # fmt: skip
    return await pipeline.stream(request, feed, 0, rendering)


async def cancel(request: Request[State]) -> Response:
    """``POST /v1/responses/{id}/cancel``: stops its generation for every client."""
    record = await _load(request, request.path_params["response"])
    response = await _resolved(request, record)
    if response["status"] in ENDED:
        return JSONBody(response, headers=NO_STORE)
    await request.state["registry"].stop(record["generation"])
    cancelled = {**response, "status": "cancelled"}
    with contextlib.suppress(RedisUnavailable):
        await _save(request, {**record, "final": cancelled})
    return JSONBody(cancelled, headers=NO_STORE)


async def delete(request: Request[State]) -> Response:
    """``DELETE /v1/responses/{id}``: forgets it (its generation's cache entry stays)."""
    response_id = request.path_params["response"]
    try:
        deleted = await request.state["responses"].delete(response_id)
    except RedisUnavailable:
        deleted = False
    if not deleted:
        raise NotFound(f"No response {response_id} is stored.")
    return JSONBody({"id": response_id, "object": "response.deleted", "deleted": True})


async def _load(request: Request[State], response_id: str, *, field: str | None = None
                ) -> dict[str, Any]:  # fmt: skip
    """The stored record, or ``404`` (naming ``field``) when there is none: unknown, expired,
    never stored, or Redis cannot say."""
    try:
        found = await request.state["responses"].load(response_id)
    except RedisUnavailable:
        found = None
    if found is None:
        named = f"{field} " if field else ""
        raise NotFound(f"The {named}response {response_id} is not stored (unknown, expired, "
                       "or made with store false).")  # fmt: skip
    record: dict[str, Any] = orjson.loads(found)
    return record


async def _save(request: Request[State], record: Mapping[str, Any]) -> None:
    await request.state["responses"].save(str(record["id"]), orjson.dumps(record))


ROUTES = [
    SurfaceRoute("/v1/responses", create, errors=error_response, methods=["POST"]),
    SurfaceRoute("/v1/responses/{response}", retrieve, errors=error_response),
    SurfaceRoute("/v1/responses/{response}", delete, errors=error_response, methods=["DELETE"]),
    SurfaceRoute("/v1/responses/{response}/cancel", cancel, errors=error_response,
                 methods=["POST"]),
]  # fmt: skip
