"""``Leases``: the worker's one loop that renews the leases of its running generations.

A generation's lease and its claim on its content say that its leader's worker is alive; they last
``GENERATION_LEASE_SECONDS`` and each generation asks to be renewed every ``LEASE_RENEW_SECONDS``
(every tick while no client follows it here, to count the clients elsewhere for ``RESUME_GRACE``).
One loop does it for all of them: at each of the worker's batch times it takes the generations due
then and renews them all in one pipelined round trip, so thousands of generations cost a few round
trips a second and no task of their own wakes for it (a keeper per generation renewing on its own
spent about 120 µs of CPU per renewal, measured with py-spy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from typing import Protocol

from app.store.client import RedisUnavailable
from app.store.generations import RedisStore, Renewal

logger = logging.getLogger(__name__)

BATCH_SECONDS = 0.05  # the worker's batch times (the generations' keepers write at them too)
RETRY_SECONDS = 1.0


class Leased(Protocol):
    @property
    def ended(self) -> bool: ...
    def renewal(self) -> Renewal | None:
        """What to write; ``None``: nothing (a generation Redis does not know)."""

    def renewed(self, renewal: Renewal | None, counted: int | None) -> float:
        """Takes the count of clients elsewhere (``None``: Redis failed); returns the seconds
        until the next renewal."""


def batch_time(at: float) -> float:
    """The first of the worker's batch times (every ``BATCH_SECONDS`` of the loop's clock) not
    before ``at``: what is written at one batch time shares a round trip (app.store.pipeline)."""
    return math.ceil(at / BATCH_SECONDS) * BATCH_SECONDS


class Leases:
    def __init__(self, store: RedisStore | None) -> None:
        self._store = store
        self._due: defaultdict[int, list[Leased]] = defaultdict(list)  # by batch number
        self._batch: dict[Leased, int] = {}  # each one's batch number; earlier entries are stale
        self._task: asyncio.Task[None] | None = None

    def renew_in(self, generation: Leased, seconds: float) -> None:
        """Renews ``generation`` at the first batch time ``seconds`` from now (or sooner, if
        so asked already), and after that as it says, until it has ended."""
        loop = asyncio.get_running_loop()
        batch = round(batch_time(loop.time() + seconds) / BATCH_SECONDS)
        if self._batch.get(generation, batch + 1) <= batch:
            return  # due sooner already (a renewal asked for while one was under way)
        self._batch[generation] = batch
        self._due[batch].append(generation)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="leases")

    async def _run(self) -> None:
        clock = asyncio.get_running_loop().time
        while self._batch:
            await asyncio.sleep(max(0.0, batch_time(clock()) - clock()) or BATCH_SECONDS)
            now = round(clock() / BATCH_SECONDS)
            due: list[Leased] = []
            for batch in [batch for batch in self._due if batch <= now]:
                for generation in self._due.pop(batch):
                    # once each: a bucket can hold one twice, a stale entry and a new one
                    if self._batch.get(generation) == batch:
                        del self._batch[generation]
                        if not generation.ended:
                            due.append(generation)
            if due:
                try:
                    await self._renew(due)
                except Exception:  # a bug: logged, and these tried again, the others untouched
                    logger.exception("renewing %d leases failed", len(due))
                    for generation in due:
                        if not generation.ended and generation not in self._batch:
                            self.renew_in(generation, RETRY_SECONDS)
        self._task = None

    async def _renew(self, due: list[Leased]) -> None:
        renewals = [generation.renewal() for generation in due]
        written = [renewal for renewal in renewals if renewal is not None]
        counts: list[int | None] = [None] * len(written)
        if written and self._store is not None:
            with contextlib.suppress(RedisUnavailable):
                counts = list(await self._store.renew(written))
        counted = iter(counts)
        for generation, renewal in zip(due, renewals, strict=True):
            seconds = generation.renewed(renewal, 0 if renewal is None else next(counted))
            if not generation.ended:
                self.renew_in(generation, seconds)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
