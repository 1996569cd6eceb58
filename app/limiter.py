"""Per-client sliding-window rate limiting in Redis, shared by every worker and replica.

One Lua script (``sliding_window.lua``, package data, registered once and called by its SHA)
checks and counts a request atomically, in one round trip shared by the checks of one turn of
the event loop (``app.pipelines``), over two counters per client: the current and the previous
fixed window, whose keys share the client's hash tag (Redis Cluster) and expire after two
windows. The estimate weights the previous window by the share of it still inside the sliding
window, which assumes its requests were spread evenly: right after a window boundary a client
that sent its whole quota at the end of the previous window stays limited, and one that sent it
at the start is limited a little longer than a true sliding log would (never shorter).
``Retry-After`` is rounded up, so waiting that long is always enough.

Clients are whom ``app.identity`` names: an API key, a trusted proxy's user, else
``scope["client"]`` as ``TrustedProxies`` leaves it (it alone applies ``FORWARDED_ALLOW_IPS``):
IPv4-mapped IPv6 counts as its IPv4 address, other IPv6 per /64, since one host commonly holds a
whole /64. When Redis fails, ``RedisUnavailable`` is raised (``app.redisclient.Guarded``: for a
second after a failure, without trying to connect again) and admission decides (fail open by
default); it is logged at most once a minute and counted in ``failures``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from app import keys
from app.pipelines import SharedPipeline
from app.redisclient import Guarded, RedisClient


@dataclass(frozen=True, slots=True)
class Decision:
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


class SlidingWindowLimiter:
    """Args:
    limit: requests admitted per ``window_seconds`` and client.
    clock: seconds since the epoch; tests pass their own.
    gate: bounds the commands in flight at once on ``redis`` (shared with the store).
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        limit: int,
        window_seconds: int,
        clock: Callable[[], float] = time.time,
        gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        script = resources.files("app").joinpath("sliding_window.lua").read_text()
        self._script = redis.register_script(script)
        self._call = Guarded(
            "limiter", "admitting or refusing as RATE_LIMIT_FAIL_OPEN says", gate=gate
        )
        self._shared = SharedPipeline(redis, self._call)

    @property
    def failures(self) -> int:
        return self._call.failures

    async def check(self, client: str, *, limit: int | None = None) -> Decision:
        """Admits and counts one request of ``client``, or refuses it without counting;
        ``limit`` replaces the default for this client (an API key's own)."""
        now = self._clock()
        index = math.floor(now / self.window_seconds)
        names = [keys.rate_window(client, index), keys.rate_window(client, index - 1)]
        args: list[int | str] = [
            self.limit if limit is None else limit,
            self.window_seconds,
            repr(now - index * self.window_seconds),
        ]
        allowed, remaining, wait = await self._shared.script(self._script, names, args)
        seconds = max(0, math.ceil(float(wait) - 1e-9))  # rounded up: waiting this long is enough
        if not allowed:
            seconds = max(1, seconds)
        return Decision(bool(allowed), int(remaining), seconds)
