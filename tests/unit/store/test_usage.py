"""Keys' usage in Redis (``app.store.usage``), one node and a cluster: counts add up per model and
UTC day in one hash a key and day, each expiring a day after the retention; a window reads every
day of it, the empty ones too; and the window rule the route and the command share."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
from redis.crc import key_slot

from app.store import keys
from app.store.client import RedisClient
from app.store.usage import DAY_SECONDS, FLUSH_SECONDS, BadWindow, Counts, Usage, window

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

TODAY = date(2025, 3, 10)
NOON = datetime(2025, 3, 10, 12, tzinfo=UTC).timestamp()
ALICE = "key:alice"


def day(offset: int) -> date:
    return TODAY + timedelta(days=offset)


async def test_counts_add_up_per_model_and_day(redis: RedisClient) -> None:
    now = [NOON]
    usage = Usage(redis, retention_days=30, clock=lambda: now[0])
    usage.add(ALICE, "llama3.2", Counts(requests=1))  # summed in the worker, sent later
    assert (await usage.report(ALICE, TODAY, TODAY)).totals == Counts()
    await usage.flush()
    await usage.record(ALICE, "llama3.2", Counts(input_tokens=26, output_tokens=12))
    await usage.record(ALICE, "llama3.2", Counts(requests=1, cache_hits=1))
    await usage.record(ALICE, "(unknown)", Counts(refused=1))
    await usage.record("key:bob", "llama3.2", Counts(requests=9))  # another key's own
    now[0] += DAY_SECONDS
    await usage.record(ALICE, "qwen3", Counts(requests=1, input_tokens=5, output_tokens=3))
    report = await usage.report(ALICE, day(-1), day(1))
    assert report.days == {
        day(-1): {},
        TODAY: {"(unknown)": Counts(refused=1),
                "llama3.2": Counts(requests=2, input_tokens=26, output_tokens=12, cache_hits=1)},
        day(1): {"qwen3": Counts(requests=1, input_tokens=5, output_tokens=3)},
    }  # fmt: skip
    assert report.totals == Counts(requests=3, input_tokens=31, output_tokens=15, cache_hits=1,
                                   refused=1)  # fmt: skip
    assert report.by_model == {
        "(unknown)": Counts(refused=1),
        "llama3.2": Counts(requests=2, input_tokens=26, output_tokens=12, cache_hits=1),
        "qwen3": Counts(requests=1, input_tokens=5, output_tokens=3),
    }
    assert report.by_day == {
        day(-1): Counts(),
        TODAY: Counts(requests=2, input_tokens=26, output_tokens=12, cache_hits=1, refused=1),
        day(1): Counts(requests=1, input_tokens=5, output_tokens=3),
    }


async def test_a_workers_sums_are_sent_within_a_flush_interval(redis: RedisClient) -> None:
    usage = Usage(redis, retention_days=30, clock=lambda: NOON)
    for _ in range(3):
        usage.add(ALICE, "llama3.2", Counts(requests=1, cache_hits=1))
    await asyncio.sleep(FLUSH_SECONDS + 0.3)  # no flush asked: the timer's round trip
    report = await usage.report(ALICE, TODAY, TODAY)
    assert report.totals == Counts(requests=3, cache_hits=3)


async def test_a_day_is_one_hash_of_model_and_counter_expiring_after_the_retention(
    redis: RedisClient,
) -> None:
    """Memory stays bounded: a key's day outlives the retention by a day, then goes."""
    usage = Usage(redis, retention_days=3, clock=lambda: NOON)
    await usage.record(ALICE, "llama3.2", Counts(requests=1, output_tokens=7))
    await usage.record(ALICE, "llama3.2", Counts(requests=1))
    name = "bib:usage:{key:alice}:2025-03-10"
    assert keys.usage(ALICE, "2025-03-10") == name
    assert await redis.hgetall(name) == {b"llama3.2\trequests": b"2",
                                         b"llama3.2\toutput_tokens": b"7"}  # fmt: skip
    assert 3 * DAY_SECONDS < await redis.ttl(name) <= 4 * DAY_SECONDS


def test_a_keys_days_share_one_slot() -> None:
    """A window is one pipeline of HGETALLs, in one slot of a cluster."""
    days = [keys.usage(ALICE, day(-n).isoformat()) for n in range(90)]
    assert len({key_slot(name.encode()) for name in days}) == 1


@pytest.mark.parametrize(
    ("start", "end", "retention_days", "expected"),
    [
        pytest.param(None, None, 90, (day(-6), TODAY), id="the-last-seven-days"),
        pytest.param(None, None, 3, (day(-2), TODAY), id="no-further-back-than-kept"),
        pytest.param("2025-03-01", None, 90, (date(2025, 3, 1), TODAY), id="until-today"),
        pytest.param(None, "2025-03-05", 90, (date(2025, 2, 27), date(2025, 3, 5)),
                     id="seven-days-to-the-end"),
        pytest.param("2024-12-11", "2025-03-10", 90, (date(2024, 12, 11), TODAY),
                     id="all-that-is-kept"),
        pytest.param("2025-03-10", "2025-03-10", 1, (TODAY, TODAY), id="today-alone"),
    ],
)  # fmt: skip
def test_a_window(start: str | None, end: str | None, retention_days: int,
                  expected: tuple[date, date]) -> None:  # fmt: skip
    assert window(start, end, today=TODAY, retention_days=retention_days) == expected


@pytest.mark.parametrize(
    ("start", "end", "problems"),
    [
        pytest.param("last week", None, {"start": "must be a date, YYYY-MM-DD"}, id="not-a-date"),
        pytest.param("2025-02-30", "20250301", {"start": "must be a date, YYYY-MM-DD",
                                                "end": "must be a date, YYYY-MM-DD"},
                     id="both-malformed"),
        pytest.param(None, "2025-03-11", {"end": "must not be after today, 2025-03-10 (UTC)"},
                     id="after-today"),
        pytest.param("2024-12-10", None,
                     {"start": "must not be before 2024-12-11: usage is kept 90 days"},
                     id="beyond-the-retention"),
        pytest.param(None, "2024-12-01",
                     {"end": "must not be before 2024-12-11: usage is kept 90 days"},
                     id="wholly-beyond-the-retention"),
        pytest.param("2024-01-01", "2025-04-01",
                     {"start": "must not be before 2024-12-11: usage is kept 90 days",
                      "end": "must not be after today, 2025-03-10 (UTC)"},
                     id="too-long-both-ways"),
        pytest.param("2025-03-09", "2025-03-08", {"start": "must not be after end"},
                     id="backwards"),
    ],
)  # fmt: skip
def test_a_window_that_cannot_be_names_its_fields(start: str | None, end: str | None,
                                                  problems: dict[str, str]) -> None:  # fmt: skip
    with pytest.raises(BadWindow) as refused:
        window(start, end, today=TODAY, retention_days=90)
    assert refused.value.problems == problems
