"""``Admission``: how a request that may start a generation is let in: resumed, over, or new and
counted against its client's quotas.

This is the one place of the rule (``docs/api.md``, "Resume" and "Quotas") for
``/v1/chats/generate``, with one parse of ``Last-Event-ID`` (``app.generations.resume``) and one
lookup of the generation:

- ``HEAD`` starts nothing: it is neither looked up nor counted.
- ``<g>.done`` or ``<g>.error`` on a stream: over (``204``, which stops an ``EventSource``),
  before any limiting.
- ``<g>.<n>`` of a generation of this same content that still exists: it continues with token
  ``n+1``, neither limited nor counted, since it continues a request already admitted.
- anything else is a new request, counted against its client's quotas (``429`` over one),
  whose stream says ``"reset": true`` when the client had named a generation.

A new request is counted once its body is read (``counted``): a malformed one counts too, as on
every limited path, but one for a model its client may not use (``ModelNotAllowed``,
``app.access.models``) counts nothing. A ``Last-Event-ID`` naming a generation that exists
waits for the content, which decides whether it resumes. Every other surface's requests, and
``POST /v1/chats/generations``, resume nothing: each is counted.

Once counted, a request owes its quotas an ``Account``: the admission keeps it for its owner,
the answer pipeline (``app.api.pipeline``), which puts its ``headers`` on whatever it answers
and gives back (``release``) what no generation took. Redis down: admitted without counting
(fail open) or ``503`` with ``RATE_LIMIT_FAIL_OPEN=false``, for every quota alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from starlette.requests import Request

from app.access.identity import identity
from app.access.quotas import Account, Decision
from app.errors import ModelNotAllowed, RateLimited, RateLimitUnavailable
from app.generations.cache import content_hash
from app.generations.feeds import Feed
from app.generations.request import CompletionRequest
from app.generations.resume import resumption
from app.lifespan import State
from app.ops import metrics
from app.store.client import RedisUnavailable
from app.store.usage import UNKNOWN_MODEL, Counts

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Admitted:
    completion: CompletionRequest
    resumed: Feed | None = None  # continue this feed from token ``index``
    index: int = 0
    over: bool = False  # the client's stream had ended: nothing to send
    reset: bool = False  # a new generation for a client that had another


class Admission:
    """One request's admission (see the module docstring)."""

    def __init__(self, request: Request[State]) -> None:
        self._request = request
        self.account: Account | None = None  # once counted

    @property
    def headers(self) -> dict[str, str]:
        """What the response says of the quotas: ``RateLimit`` and ``RateLimit-Policy`` once
        the request was counted, else nothing."""
        return {} if self.account is None else self.account.headers

    def release(self) -> None:
        """Gives back what the request owes, unless a generation took it; for its owner."""
        if self.account is not None:
            self.account.release()

    async def admit(self, read: Callable[[], Awaitable[CompletionRequest]], *,
                    resumable: bool) -> Admitted:  # fmt: skip
        """Decides how the request is let in, ``read`` giving its content; raises
        ``RateLimited``."""
        request = self._request
        if request.method == "HEAD":
            return Admitted(await read())
        last = resumption(request.headers.get("last-event-id", "")) if resumable else None
        registry = request.state["registry"]
        located = None
        if last is not None and not last.over:
            located = await registry.locate(last.generation)
        counted = located is None and (last is None or not last.over)
        completion = await self.counted(read, lambda asked: asked.model, count=counted)
        if last is not None and completion.stream:
            if last.next_index is None:
                return Admitted(completion, over=True)
            if located is not None and located.meta.sha == content_hash(completion):
                feed = await registry.follow(located)
                if feed is not None:
                    return Admitted(completion, resumed=feed, index=last.next_index)
        if not counted:
            await self.count(model=completion.model)
        return Admitted(completion, reset=last is not None)

    async def counted(self, read: Callable[[], Awaitable[T]], model: Callable[[T], str], *,
                      count: bool = True, generates: bool = True) -> T:  # fmt: skip
        """What ``read`` gives, the request counted (``count``) once it is read, a refusal
        under its ``model``: one that cannot be read counts all the same, one for a model its
        client may not use counts nothing."""
        try:
            result = await read()
        except ModelNotAllowed:
            raise
        except Exception:
            if count:
                await self.count(generates=generates)
            raise
        if count:
            await self.count(generates=generates, model=model(result))
        return result

    async def count(self, *, generates: bool = True, model: str | None = None) -> Account:
        """Counts the request against its identity's quotas (its key's own, else the
        defaults); raises ``RateLimited`` when one refuses it, recorded as its key's use under
        ``model`` (``None``: not read, ``usage.UNKNOWN_MODEL``). Returns who it is and what it
        owes (nothing when nothing is limited, or Redis is down and admission fails open);
        ``generates`` false (embeddings): it takes no concurrency ticket."""
        request = self._request
        quotas = request.state["quotas"]
        asking = identity(request.scope)
        usage = request.state["usage"] if asking.key is not None else None  # keys' use only
        self.account = Account(asking.client, usage=usage)
        if quotas is None:
            return self.account
        limits = asking.limits(quotas.defaults)
        if not generates:
            limits = replace(limits, concurrency=0)
        if not (limits.requests or limits.tokens or limits.concurrency):
            return self.account
        try:
            verdict = await quotas.check(asking.client, limits)
        except RedisUnavailable:
            if request.state["settings"].rate_limit_fail_open:
                return self.account
            raise RateLimitUnavailable("The rate limiter is unavailable; try again soon.") from None
        if verdict.account is None:
            refused = max((d for d in verdict.decisions if not d.allowed),
                          key=lambda d: d.retry_after_seconds)  # fmt: skip
            metrics.RATE_LIMITED.labels(refused.quota).inc()
            if usage is not None:
                usage.add(asking.client, model or UNKNOWN_MODEL, Counts(refused=1))
            raise RateLimited(_refusal(refused), refused.quota,
                              retry_after_seconds=refused.retry_after_seconds,
                              headers=verdict.headers)  # fmt: skip
        self.account = verdict.account
        self.account.usage = usage
        return self.account


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
