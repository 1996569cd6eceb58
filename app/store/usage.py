"""What each API key used, per model and UTC day, in Redis: recorded by every replica, read back
for a window of days by ``GET /v1/usage`` (``app.api.native.usage``) and ``python -m app keys
usage``, both through ``Usage.report`` and ``window``.

    bib:usage:{key:<name>}:<YYYY-MM-DD>   a hash: "<model>\\t<counter>" -> count

One hash a key and day, a field a model and counter (``Counts``); no model's name holds a tab.
Every write is ``HINCRBY`` for each counter that changed, then ``EXPIRE`` of
``USAGE_RETENTION_DAYS`` and one day, so a day's hash lives as long as a window may reach it and
memory is bounded by keys x models x days kept, whatever the traffic. A key's days share its hash
tag: a window is one pipelined ``HGETALL`` a day, in one slot of a Redis Cluster.

A request's counts (``add``) are summed in the worker and sent together at most
``FLUSH_SECONDS`` later, on this component's own shared pipeline, waited for by nobody (and at
once when the worker stops): three Redis commands a cached hit cost about a quarter of its CPU
(``scripts/bench``-style A/B, 50 connections), the sum costs a dictionary update. A generation's
tokens are written when it ends (``record``), awaited by its keeper, so a client told of the end
reads them. Usage lost while
Redis is down is logged and counted (``bib_redis_errors_total{component="usage"}``), never a
request's failure; reading it then raises ``RedisUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from app.store import keys
from app.store.client import Guarded, RedisClient, RedisUnavailable
from app.store.pipeline import Queue, SharedPipeline

DAY_SECONDS = 86_400
FLUSH_SECONDS = 1.0  # a worker's summed request counts reach Redis at most this much later
DEFAULT_WINDOW_DAYS = 7  # a window that names no start: this many days, ending with its end
UNKNOWN_MODEL = "(unknown)"  # a refusal before the model was read; no model's name has "("
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, slots=True)
class Counts:
    """One key's counters: ``requests`` answered (by a generation, the cache or an embedding),
    the engine's ``input_tokens`` and ``output_tokens``, ``cache_hits`` (answers from the cache or
    from joining another's generation: no tokens of their own), ``refused`` by a quota."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_hits: int = 0
    refused: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Counts)))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


COUNTERS = tuple(f.name for f in fields(Counts))


@dataclass(frozen=True, slots=True)
class Report:
    """One key's use from ``start`` to ``end``, UTC days both included: ``days`` holds every
    day of the window (empty when nothing was used), each day its models' counts."""

    start: date
    end: date
    days: dict[date, dict[str, Counts]]

    @property
    def totals(self) -> Counts:
        return sum(self.by_day.values(), Counts())

    @property
    def by_model(self) -> dict[str, Counts]:
        summed: dict[str, Counts] = {}
        for models in self.days.values():
            for model, counts in models.items():
                summed[model] = summed.get(model, Counts()) + counts
        return dict(sorted(summed.items()))

    @property
    def by_day(self) -> dict[date, Counts]:
        return {day: sum(models.values(), Counts()) for day, models in self.days.items()}


class BadWindow(ValueError):
    """``problems``: each field of the window (``start``, ``end``) that is wrong, and why."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name} {why}" for name, why in problems.items()))
        self.problems = problems


def window(start: str | None, end: str | None, *, today: date, retention_days: int
           ) -> tuple[date, date]:  # fmt: skip
    """The days from ``start`` to ``end`` (``YYYY-MM-DD``, UTC): by default the last
    ``DEFAULT_WINDOW_DAYS`` ending today, never reaching before the ``retention_days`` kept
    (today included) nor after today. Raises ``BadWindow``."""
    oldest = today - timedelta(days=retention_days - 1)
    problems: dict[str, str] = {}
    last, first = _day(end, "end", problems), _day(start, "start", problems)
    if problems:
        raise BadWindow(problems)
    kept = f"must not be before {oldest}: usage is kept {retention_days} days"
    last = today if last is None else last
    if last > today:
        problems["end"] = f"must not be after today, {today} (UTC)"
    elif last < oldest:
        problems["end"] = kept
    if first is None:  # not given: it cannot be wrong
        first = max(last - timedelta(days=DEFAULT_WINDOW_DAYS - 1), oldest)
    elif first < oldest:
        problems["start"] = kept
    elif first > last and not problems:
        problems["start"] = "must not be after end"
    if problems:
        raise BadWindow(problems)
    return first, last


def _day(raw: str | None, name: str, problems: dict[str, str]) -> date | None:
    if raw is None:
        return None
    try:
        if not _DAY.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        problems[name] = "must be a date, YYYY-MM-DD"
        return None


class Usage:
    """Records and reads keys' usage (see the module docstring); a key is named by its client
    id, ``key:<name>`` (``app.access.identity``).

    Args:
        retention_days: how many days a window may reach back, today included.
        clock: seconds since the epoch, which decides the day; tests pass their own.
        gate: bounds the commands in flight at once on ``redis`` (shared with the store).
    """

    def __init__(self, redis: RedisClient, *, retention_days: int,
                 clock: Callable[[], float] = time.time,
                 gate: asyncio.Semaphore | None = None) -> None:  # fmt: skip
        self.retention_days = retention_days
        self._clock = clock
        self._shared = SharedPipeline(redis, Guarded("usage", "losing usage", gate=gate))
        self._pending: dict[tuple[str, str], int] = {}  # (hash, field) -> not yet sent
        self._sending: asyncio.TimerHandle | None = None

    def today(self) -> date:
        return datetime.fromtimestamp(self._clock(), UTC).date()

    def add(self, client: str, model: str, counts: Counts) -> None:
        """Adds ``counts`` to today's within ``FLUSH_SECONDS``, waiting for nothing."""
        self._sum(self._pending, client, model, counts)
        if self._sending is None:
            self._sending = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._send)

    async def record(self, client: str, model: str, counts: Counts) -> None:
        """Adds ``counts`` to today's now. Raises ``RedisUnavailable``."""
        await self._shared.run(self._increments(self._sum({}, client, model, counts)))

    async def flush(self) -> None:
        """Sends what ``add`` summed now, and waits for it (a worker that stops)."""
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None
        pending, self._pending = self._pending, {}
        if pending:
            with contextlib.suppress(RedisUnavailable):  # logged and counted by the guard
                await self._shared.run(self._increments(pending))

    def _send(self) -> None:
        self._sending = None
        pending, self._pending = self._pending, {}
        self._shared.post(self._increments(pending))

    def _sum(self, into: dict[tuple[str, str], int], client: str, model: str,
             counts: Counts) -> dict[tuple[str, str], int]:  # fmt: skip
        key = keys.usage(client, self.today().isoformat())
        for name in COUNTERS:
            n = getattr(counts, name)
            if n:
                into[key, f"{model}\t{name}"] = into.get((key, f"{model}\t{name}"), 0) + n
        return into

    def _increments(self, summed: dict[tuple[str, str], int]) -> Queue:
        ttl_seconds = (self.retention_days + 1) * DAY_SECONDS

        def queue(pipe: Any) -> None:
            for (key, field), n in summed.items():
                pipe.hincrby(key, field, n)
            for key in {key for key, _ in summed}:
                pipe.expire(key, ttl_seconds)

        return queue

    async def report(self, client: str, start: date, end: date) -> Report:
        """``client``'s use from ``start`` to ``end`` (see ``window``). Raises
        ``RedisUnavailable``."""
        days = [start + timedelta(days=n) for n in range((end - start).days + 1)]

        def queue(pipe: Any) -> None:
            for day in days:
                pipe.hgetall(keys.usage(client, day.isoformat()))

        replies = await self._shared.run(queue)
        return Report(start, end, dict(zip(days, map(_models, replies), strict=True)))


def _models(found: dict[bytes, bytes]) -> dict[str, Counts]:
    """One day's hash as each model's counts (a field of an unknown counter is skipped)."""
    counted: dict[str, dict[str, int]] = {}
    for field, value in found.items():
        model, _, name = field.decode().rpartition("\t")
        if name in COUNTERS:
            counted.setdefault(model, {})[name] = int(value)
    return {model: Counts(**values) for model, values in sorted(counted.items())}
