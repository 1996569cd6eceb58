"""``FairQueue``: generations waiting for an Ollama host's slot, shared by every worker and
replica through Redis, served round-robin between clients.

With ``OLLAMA_SLOTS`` (or a host's own ``;slots=N``) a host never has more generations in flight
than its slots, counted in the in-flight sets that routing already keeps (``app.upstream.hosts``). A
generation that finds no free slot on a host with its model joins the queue; one Lua script
(``fair_queue.lua``) joins, tries and leaves atomically. Every entry has a priority band
(``app.settings.BANDS``): the ``interactive`` band is served before the ``batch`` band, except
that a batch entry that has waited ``QUEUE_BATCH_MAX_WAIT`` goes next, so a flood of people
never starves a batch for ever. Within a band, each client's n-th waiting generation is served
in the n-th round (start-time fair queuing on a tag per client and band), so one client's
twentieth request waits behind another client's first; within a client, first come, first
served. The queue is work-conserving: an entry takes a free slot unless an entry ahead of it
can use that same host; of the free hosts, the one conversation affinity prefers
(``app.upstream.affinity``) unless it is too busy.

A waiter tries again whenever a slot is freed or a waiter leaves anywhere (the ``bib:slots``
channel, heard by ``wake``), and at least every ``POLL_SECONDS``; each try renews its lease, so
a dead worker's entries leave the queue within ``WAITER_LEASE_SECONDS``, and its slots within the
in-flight lease. Each try answers the waiter's position: how many entries ahead of it could
take a slot it could use. A waiter that is cancelled (its client left) or waited
``QUEUE_TIMEOUT`` leaves at once; a client with ``QUEUE_MAX_PER_CLIENT`` waiting is refused.
``Retry-After`` is an estimate from the generations' mean duration (``Durations``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import anyio

from app.errors import QueueTimeout, RateLimited
from app.ops import metrics
from app.settings import BANDS
from app.store import keys
from app.store.client import Guarded, RedisClient, RedisUnavailable
from app.store.pipeline import SharedPipeline

POLL_SECONDS = 0.5
WAITER_LEASE_SECONDS = 5.0
UNLIMITED = 10**9  # the slots of a host without any: never full


class Durations:
    """The mean duration of this worker's generations, for honest-ish ``Retry-After``s."""

    def __init__(self) -> None:
        self.mean_seconds = 0.0

    def add(self, seconds: float) -> None:
        self.mean_seconds = (
            seconds if not self.mean_seconds else 0.8 * self.mean_seconds + 0.2 * seconds
        )

    def retry_after(self, ahead: int, slots: int) -> int:
        """Seconds until ``ahead`` generations before one's own have started, at least 1."""
        return max(1, math.ceil(self.mean_seconds * max(1, ahead) / max(1, slots)))


class FairQueue:
    def __init__(self, redis: RedisClient, *, max_per_client: int, timeout_seconds: float,
                 batch_max_wait_seconds: float = 60.0,
                 gate: asyncio.Semaphore | None = None) -> None:  # fmt: skip
        self._script = redis.register_script(
            resources.files("app.upstream").joinpath("fair_queue.lua").read_text()
        )
        self._redis = redis
        self._call = Guarded("queue", "routing without the queue", gate=gate)
        self._shared = SharedPipeline(redis, self._call)
        self._max_per_client = max_per_client
        self._timeout_seconds = timeout_seconds
        self._batch_max_wait_seconds = batch_max_wait_seconds
        self._wakes: set[asyncio.Event] = set()
        self.durations = Durations()

    def wake(self) -> None:
        """A slot was freed or a waiter left somewhere: every waiter here tries again."""
        for wake in self._wakes:
            wake.set()

    async def take(
        self,
        urls: Sequence[str],
        slots: Sequence[int],
        ticket: str,
        ticket_lease: float,
        *,
        client: str,
        model: str,
        band: str = "interactive",
        preferred: int | None = None,
        spill: int = 0,
        on_position: Callable[[int], None],
    ) -> int:
        """Waits for a slot on one of the hosts ``urls`` (each with its ``slots``; 0: no cap)
        and puts ``ticket`` in its in-flight set; returns the host's index. ``band``: the
        entry's priority band; ``preferred``: the index of the host affinity prefers, unless it
        is more than ``spill`` generations busier. Raises ``RateLimited`` (too many waiting),
        ``QueueTimeout`` and ``RedisUnavailable``."""
        names = keys.queue() + [keys.host_in_flight(url) for url in urls]
        hosts: list[Any] = []
        for url, n in zip(urls, slots, strict=True):
            hosts += [url, n or UNLIMITED]
        total = sum(n or UNLIMITED for n in slots)
        choice = [ticket, ticket_lease, 0 if preferred is None else preferred + 1, spill,
                  self._batch_max_wait_seconds]  # fmt: skip

        def join(most: int) -> list[Any]:
            return ["join", time.time(), secrets.token_hex(8), WAITER_LEASE_SECONDS, *choice,
                    client, model, band, most, *hosts]  # fmt: skip

        reply = await self._run(names, join(self._max_per_client))
        if reply[0] == b"full":
            metrics.RATE_LIMITED.labels("queue").inc()
            wait = self.durations.retry_after(int(reply[1]), total)
            raise RateLimited(
                f"{reply[1]} generations of this client are waiting for the GPU, the most "
                f"allowed; retry in {wait} seconds.",
                "queue",
                retry_after_seconds=wait,
            )
        if reply[0] == b"granted":
            return int(reply[1])
        member = reply[2]
        loop = asyncio.get_running_loop()
        started = loop.time()
        wake = asyncio.Event()
        self._wakes.add(wake)
        waiting = [metrics.QUEUE_WAITING.labels(url, model) for url in urls]
        waiting.append(metrics.QUEUE_WAITING_BANDS.labels(band))
        for gauge in waiting:
            gauge.inc()
        try:
            while reply[0] != b"granted":
                position = int(reply[1])
                on_position(position)
                left = started + self._timeout_seconds - loop.time()
                if left <= 0:
                    wait = self.durations.retry_after(position, total)
                    raise QueueTimeout(
                        f"No GPU slot was free within {self._timeout_seconds:g} seconds; "
                        f"retry in {wait} seconds.",
                        headers={"Retry-After": str(wait)},
                    )
                wake.clear()
                with anyio.move_on_after(min(POLL_SECONDS, left)):
                    await wake.wait()
                reply = await self._run(names, ["try", time.time(), member, WAITER_LEASE_SECONDS,
                                                *choice, *hosts])  # fmt: skip
                if reply[0] == b"gone":  # its lease ran out (a stalled loop): in line again
                    reply = await self._run(names, join(UNLIMITED))
                    member = reply[2] if reply[0] == b"wait" else member
            metrics.QUEUE_WAIT.observe(loop.time() - started)
            return int(reply[1])
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(RedisUnavailable):
                await self.leave(member)
            raise
        finally:
            for gauge in waiting:
                gauge.dec()
            self._wakes.discard(wake)

    async def leave(self, member: bytes) -> None:
        """Takes ``member`` out of the queue, and tells the waiters behind it."""
        await self._run(keys.queue(), ["leave", time.time(), member, WAITER_LEASE_SECONDS])
        await self._call(lambda: self._redis.publish(keys.SLOTS_CHANNEL, ""))

    async def _run(self, names: list[str], args: list[Any]) -> list[Any]:
        reply: list[Any] = await self._shared.script(self._script, names, args)
        return reply

    async def lengths(self) -> dict[str, dict[str, int]]:
        """Live waiting entries per host URL, per model and per band, as every replica sees
        them."""
        _, leases, entries_key, *_ = keys.queue()

        def queue(pipe: Any) -> None:
            pipe.hgetall(entries_key)
            pipe.zrangebyscore(leases, time.time(), "+inf")

        entries, live = await self._shared.run(queue)
        by_host: dict[str, int] = {}
        by_model: dict[str, int] = {}
        by_band = dict.fromkeys(BANDS, 0)
        for member in live:
            # client, model, band, URLs (no band: an entry of a version before bands)
            fields = entries.get(member, b"\t\t").decode().split("\t")
            model, band, urls = fields[1], fields[2] if len(fields) > 3 else BANDS[0], fields[-1]
            by_model[model] = by_model.get(model, 0) + 1
            by_band[band] = by_band.get(band, 0) + 1
            for url in urls.split():
                by_host[url] = by_host.get(url, 0) + 1
        return {"hosts": by_host, "models": by_model, "bands": by_band}
