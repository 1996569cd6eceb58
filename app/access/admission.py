"""Admission of a request that may start a generation: resumed, over, or new and counted.

This is the one place of the rule (DESIGN.md, "Resume" and "Rate limiting") for
``/v1/chats/generate``, with one parse of ``Last-Event-ID`` and one lookup of the generation:

- ``HEAD`` starts nothing: it is neither looked up nor counted.
- ``<g>.done`` or ``<g>.error`` on a stream: over (``204``, which stops an ``EventSource``),
  before any limiting.
- ``<g>.<n>`` of a generation of this same content that still exists: it continues with token
  ``n+1``, neither limited nor counted, since it continues a request already admitted.
- anything else is a new request, counted against its client's quotas (``429`` over one),
  whose stream says ``"reset": true`` when the client had named a generation.

A new request is counted before its body is read, so a malformed one counts too, as on every
limited path; only a ``Last-Event-ID`` naming a generation that exists waits for the body,
whose content decides whether it resumes. ``POST /v1/chats/generations`` resumes nothing: each
request is counted. The quotas' headers go on the response through ``ratelimit.stamp``, and
what an admitted request owes (``limiter.Account``) goes to the generation it leads, or back at
once. Redis down: admitted without counting (fail open) or ``503`` with
``RATE_LIMIT_FAIL_OPEN=false``, for every quota alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson
from starlette.requests import Request

from app.access.identity import identity
from app.access.quota_headers import limit_headers, stamp
from app.access.quotas import Account, Decision
from app.errors import InvalidJSON, RateLimited, RateLimitUnavailable, TooLarge
from app.generations import wire as events
from app.generations.cache import content_hash
from app.generations.feeds import Feed
from app.generations.request import CompletionRequest, parse_body, parse_query
from app.lifespan import State
from app.ops import metrics
from app.store.client import RedisUnavailable


@dataclass(frozen=True, slots=True)
class Admitted:
    completion: CompletionRequest
    resumed: Feed | None = None  # continue this feed from token ``index``
    index: int = 0
    over: bool = False  # the client's stream had ended: nothing to send
    reset: bool = False  # a new generation for a client that had another
    account: Account | None = None  # what a counted request owes its quotas


async def admit(request: Request[State], *, resumable: bool) -> Admitted:
    """Decides how ``request`` is let in (see the module docstring); raises ``RateLimited``."""
    if request.method == "HEAD":
        return Admitted(await read_completion(request))
    last = None
    if resumable:
        last = events.parse_event_id(request.headers.get("last-event-id", ""))
    registry = request.state["registry"]
    located = None
    if last is not None and last.index is not None:
        located = await registry.locate(last.generation)
    counted = located is None and (last is None or last.index is not None)
    account = await count(request) if counted else None
    completion = await read_completion(request)
    if last is not None and completion.stream:
        if last.index is None:
            return Admitted(completion, over=True)
        if located is not None and located.meta.sha == content_hash(completion):
            feed = await registry.follow(located)
            if feed is not None:
                return Admitted(completion, resumed=feed, index=last.index + 1)
    if not counted:
        account = await count(request)
    return Admitted(completion, reset=last is not None, account=account)


async def count(request: Request[State], *, generates: bool = True) -> Account:
    """Counts the request against its identity's quotas (its key's own, else the defaults);
    raises ``RateLimited`` when one refuses it. Returns who it is and what it owes (nothing
    when nothing is limited, or Redis is down and admission fails open); ``generates`` false
    (embeddings): it takes no concurrency slot."""
    limiter = request.state["quotas"]
    asking = identity(request.scope)
    if limiter is None:
        return Account(asking.client)
    limits = asking.limits(limiter.defaults)
    if not generates:
        limits = replace(limits, concurrency=0)
    if not (limits.requests or limits.tokens or limits.concurrency):
        return Account(asking.client)
    try:
        verdict = await limiter.check(asking.client, limits)
    except RedisUnavailable:
        if request.state["settings"].rate_limit_fail_open:
            return Account(asking.client)
        raise RateLimitUnavailable("The rate limiter is unavailable; try again soon.") from None
    headers = limit_headers(verdict.decisions)
    stamp(request.scope, headers, verdict.account)
    if verdict.account is None:
        refused = max((d for d in verdict.decisions if not d.allowed),
                      key=lambda d: d.retry_after_seconds)  # fmt: skip
        metrics.RATE_LIMITED.labels(refused.quota).inc()
        raise RateLimited(
            _refusal(refused),
            refused.quota,
            headers={
                **headers,
                "Retry-After": str(refused.retry_after_seconds),
                "Cache-Control": "no-store",
            },
        )
    return verdict.account


def _refusal(refused: Decision) -> str:
    wait = refused.retry_after_seconds
    if refused.quota == "requests":
        return (f"Rate limit of {refused.limit} requests per {refused.window_seconds} seconds "
                f"exceeded; retry in {wait} seconds.")  # fmt: skip
    if refused.quota == "tokens":
        return (f"Token budget of {refused.limit} tokens per {refused.window_seconds} seconds "
                f"used up; retry in {wait} seconds.")  # fmt: skip
    return (
        f"{refused.limit} generations of this client are running, the most at once; "
        "retry when one has ended."
    )


async def read_completion(request: Request[State]) -> CompletionRequest:
    """The request's JSON body (``POST``) or query string, validated."""
    settings = request.state["settings"]
    if request.method == "POST":
        return parse_body(await read_json(request, settings.max_body_bytes), settings.default_model)
    return parse_query(request.query_params, settings.default_model)


async def read_json(request: Request[State], limit_bytes: int) -> object:
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
