"""Per-client quotas in Redis, shared by every worker and replica: requests and Ollama's tokens
per sliding window, and generations running at once.

One Lua script (``quotas.lua``, package data, registered once and called by its SHA) checks
every quota of a request and counts it atomically, in one round trip shared by the checks of one
turn of the event loop (``app.store.pipeline``): identity and quotas cost no round trip of their
own. All keys of one client share its hash tag (Redis Cluster), and each expires by itself.

- **Requests** and **tokens**: two counters per quota, the current and the previous fixed
  window, expiring after two windows. The estimate weights the previous window by the share of
  it still inside the sliding window, which assumes its counts were spread evenly: right after a
  boundary a client that spent its whole quota at the end of the previous window stays limited,
  and one that spent it at the start is limited a little longer than a true sliding log would
  (never shorter). A request needs room for one more request and at least one token left; its
  tokens are charged when its generation ends (``Account.settle``), so one long generation can
  overdraw, and then the client waits until the estimate is back under the budget.
- **Concurrency**: the client's running generations as tickets in a sorted set, scored by when
  their lease ends. An admitted request takes a ticket; the generation it leads keeps it,
  renewing it with its own lease (``app.generations.leases``), and gives it back when it ends,
  however it ends; a request answered from the cache or joining a running generation gives it back
  at once. A dead worker's tickets expire with its leases. When a ticket frees cannot be foretold,
  so a refusal for it says ``CONCURRENCY_RETRY_SECONDS``.

``Retry-After`` is rounded up, so waiting that long is enough unless more is charged meanwhile.

Clients are whom ``app.access.identity`` names: an API key, a trusted proxy's user, else
``scope["client"]`` as ``TrustedProxiesMiddleware`` leaves it (it alone applies
``FORWARDED_ALLOW_IPS``): IPv4-mapped IPv6 counts as its IPv4 address, other IPv6 per /64, since one
host commonly holds a whole /64. When Redis fails, ``RedisUnavailable`` is raised
(``app.store.client.Guarded``: for a second after a failure, without trying to connect again) and
admission decides for every quota (fail open by default); it is logged at most once a minute and
counted in ``failures``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.store import keys, tickets
from app.store.client import Guarded, RedisClient, register_script
from app.store.generations import GENERATION_LEASE_SECONDS
from app.store.pipeline import Queue, SharedPipeline
from app.store.usage import Usage

Quota = Literal["requests", "tokens", "concurrency"]
CONCURRENCY_RETRY_SECONDS = 1  # a ticket frees when a generation ends, which nobody can tell


@dataclass(frozen=True, slots=True)
class Limits:
    """A client's quotas; 0 turns one off."""

    requests: int = 0
    tokens: int = 0
    concurrency: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """One quota's answer to one request."""

    quota: Quota
    limit: int
    window_seconds: int  # 0 for concurrency, which has no window
    allowed: bool
    remaining: int
    retry_after_seconds: int  # 0 when another request would be admitted now


@functools.lru_cache(maxsize=4096)  # parsing an address is most of the cost of a check
def client_key(host: str | None) -> str:
    """Whom to count: the IPv4 address, or the IPv6 /64; unknown peers share one key."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# each quota's policy name and its parameters beyond q ("default" names the requests' quota)
_POLICIES: dict[Quota, tuple[str, str]] = {
    "requests": ("default", ";w={w}"),
    "tokens": ("tokens", ';w={w};qu="tokens"'),
    "concurrency": ("concurrency", ';qu="concurrent-requests"'),
}


def limit_headers(decisions: Sequence[Decision]) -> dict[str, str]:
    """The IETF httpapi draft's ``RateLimit-Policy`` and ``RateLimit`` headers: one item per
    quota."""
    policies, states = [], []
    for d in decisions:
        name, more = _POLICIES[d.quota]
        policies.append(f'"{name}";q={d.limit}' + more.format(w=d.window_seconds))
        states.append(f'"{name}";r={d.remaining};t={d.retry_after_seconds}')
    return {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(states)}


@dataclass(frozen=True, slots=True)
class Verdict:
    decisions: list[Decision]  # of the quotas that are on
    account: Account | None  # ``None``: refused

    @property
    def allowed(self) -> bool:
        return self.account is not None

    @property
    def headers(self) -> dict[str, str]:
        return limit_headers(self.decisions)


class Account:
    """Who an admitted request is (its client, for the GPU queue's turns) and what it owes that
    client's quotas: the concurrency ticket it holds, if concurrency is capped, and the tokens
    of the generation it leads, if they are counted; ``headers``, what its response says of its
    quotas. Given back once: ``settle`` by the generation that took it (``take``) when it ends,
    or by an embedding that was answered; else ``release`` by the request's owner (the answer
    pipeline, ``app.api.pipeline``), which does nothing once it was taken or settled. ``usage``:
    where the engine's counts of the generation it leads are recorded as its key's use
    (``app.store.usage``); ``None`` for a client without a key, whose use is not recorded."""

    __slots__ = ("_counts_tokens", "_quotas", "client", "headers", "held", "ticket", "usage")

    def __init__(self, client: str, ticket: str | None = None, *,
                 quotas: Quotas | None = None, counts_tokens: bool = False,
                 headers: Mapping[str, str] | None = None,
                 usage: Usage | None = None) -> None:  # fmt: skip
        self.client = client
        self.usage = usage
        self.ticket = ticket
        self.headers = dict(headers or {})  # RateLimit and RateLimit-Policy, when counted
        self.held = False  # a generation leads for it, and settles it when it ends
        self._counts_tokens = counts_tokens
        self._quotas = quotas  # None: nothing is owed

    @property
    def lease(self) -> tuple[str, str] | None:
        """The running set and the ticket that a generation's renewals keep alive."""
        return None if self.ticket is None else (keys.running(self.client), self.ticket)

    def take(self) -> None:
        """A generation leads for it from now on, and settles it when it ends."""
        self.held = True

    def release(self) -> None:
        """Gives the ticket back in this turn's round trip, waiting for nothing, unless a
        generation took it or it was settled."""
        if self.held:
            return
        quotas, self._quotas = self._quotas, None
        if quotas is not None and self.ticket is not None:
            quotas.give_back(self.client, self.ticket)

    async def settle(self, tokens: int) -> None:
        """Charges ``tokens`` (if counted) and gives the ticket back. Raises
        ``RedisUnavailable``."""
        quotas, self._quotas = self._quotas, None
        tokens = tokens if self._counts_tokens else 0
        if quotas is not None and (self.ticket is not None or tokens > 0):
            await quotas.shared.run(quotas.settlement(self.client, self.ticket, tokens))


class Quotas:
    """Args:
    defaults: every client's quotas, unless its API key has its own.
    window_seconds, token_window_seconds: the requests' and the tokens' sliding windows.
    clock: seconds since the epoch; tests pass their own.
    gate: bounds the commands in flight at once on ``redis`` (shared with the store).
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        defaults: Limits,
        window_seconds: int,
        token_window_seconds: int = 60,
        clock: Callable[[], float] = time.time,
        gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.defaults = defaults
        self.window_seconds = window_seconds
        self.token_window_seconds = token_window_seconds
        self._clock = clock
        self._script = register_script(redis, __package__, "quotas.lua")
        self._call = Guarded(
            "limiter", "admitting or refusing as RATE_LIMIT_FAIL_OPEN says", gate=gate
        )
        self.shared = SharedPipeline(redis, self._call)
        self._freeing: dict[str, list[str]] = {}  # client -> tickets given back this turn

    @property
    def failures(self) -> int:
        return self._call.failures

    async def check(self, client: str, limits: Limits | None = None) -> Verdict:
        """Admits and counts one request of ``client`` under ``limits`` (the defaults unless
        given: an API key's own), or refuses it without counting anything."""
        limits = self.defaults if limits is None else limits
        now = self._clock()
        index, elapsed = divmod(now, self.window_seconds)
        token_index, token_elapsed = divmod(now, self.token_window_seconds)
        ticket = secrets.token_urlsafe(12) if limits.concurrency > 0 else ""
        names = [
            keys.rate_window(client, int(index)), keys.rate_window(client, int(index) - 1),
            keys.token_window(client, int(token_index)),
            keys.token_window(client, int(token_index) - 1), keys.running(client),
        ]  # fmt: skip
        args: list[int | str] = [
            limits.requests, self.window_seconds, repr(elapsed),
            limits.tokens, self.token_window_seconds, repr(token_elapsed),
            limits.concurrency, repr(now), ticket, repr(GENERATION_LEASE_SECONDS),
        ]  # fmt: skip
        reply = await self.shared.script(self._script, names, args)
        admitted, request_fits, requests_left, request_wait = reply[:4]
        token_fits, tokens_left, token_wait, concurrency_fits, concurrency_left = reply[4:]
        decisions = []
        if limits.requests > 0:
            decisions.append(Decision("requests", limits.requests, self.window_seconds,
                                      bool(request_fits), int(requests_left),
                                      _seconds(request_wait, request_fits)))  # fmt: skip
        if limits.tokens > 0:
            decisions.append(Decision("tokens", limits.tokens, self.token_window_seconds,
                                      bool(token_fits), int(tokens_left),
                                      _seconds(token_wait, token_fits)))  # fmt: skip
        if limits.concurrency > 0:
            wait = 0 if concurrency_left else CONCURRENCY_RETRY_SECONDS
            decisions.append(Decision("concurrency", limits.concurrency, 0, bool(concurrency_fits),
                                      int(concurrency_left), wait))  # fmt: skip
        if not admitted:
            return Verdict(decisions, None)
        return Verdict(decisions, Account(client, ticket or None, quotas=self,
                                          counts_tokens=limits.tokens > 0,
                                          headers=limit_headers(decisions)))  # fmt: skip

    def give_back(self, client: str, ticket: str) -> None:
        """Frees ``ticket`` in this turn's round trip, waiting for nothing: a turn's tickets go
        as one ``ZREM`` per client (a cache hit's ticket costs no command of its own)."""
        if not self._freeing:
            self.shared.post(self._free)
        self._freeing.setdefault(client, []).append(ticket)

    def _free(self, pipe: Any) -> None:
        freeing, self._freeing = self._freeing, {}
        for client, given_back in freeing.items():
            tickets.drop(pipe, keys.running(client), given_back)

    def settlement(self, client: str, ticket: str | None, tokens: int) -> Queue:
        """The commands that charge ``tokens`` to ``client`` and free its ``ticket``."""
        charged = None
        if tokens > 0:
            charged = keys.token_window(
                client, math.floor(self._clock() / self.token_window_seconds)
            )

        def queue(pipe: Any) -> None:
            if charged is not None:
                pipe.incrby(charged, tokens)
                pipe.expire(charged, self.token_window_seconds * 2)
            if ticket is not None:
                tickets.drop(pipe, keys.running(client), [ticket])

        return queue


def _seconds(wait: bytes | str, fits: int) -> int:
    """A wait rounded up (waiting this long is enough), and at least 1 for a refusal."""
    seconds = max(0, math.ceil(float(wait) - 1e-9))
    return seconds if fits else max(1, seconds)
