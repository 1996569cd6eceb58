"""Cached dependency checks: bounded in time, shared by concurrent probes, cached a second."""

from __future__ import annotations

import asyncio

import pytest

from app.ops.checks import CachedCheck

pytestmark = pytest.mark.anyio


async def test_concurrent_probes_share_one_check_and_cache_it() -> None:
    calls = 0

    async def check() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    cached = CachedCheck(check, cache_seconds=10)
    outcomes = await asyncio.gather(*(cached() for _ in range(20)))
    assert calls == 1
    assert all(o.passed and o.value == 1 for o in outcomes)


async def test_check_runs_again_after_the_cache_expires() -> None:
    results = iter([1, 2])

    async def check() -> int:
        return next(results)

    cached = CachedCheck(check, cache_seconds=0.05)
    assert (await cached()).value == 1
    await asyncio.sleep(0.1)
    assert (await cached()).value == 2


async def test_a_hanging_dependency_fails_within_the_timeout() -> None:
    async def hang() -> None:
        await asyncio.sleep(10)

    outcome = await asyncio.wait_for(CachedCheck(hang, timeout_seconds=0.1)(), 1)
    assert not outcome.passed
    assert outcome.report() == [{"status": "fail", "output": "no answer within 0.1 s"}]


async def test_an_error_is_a_failed_check_not_an_exception() -> None:
    async def refuse() -> None:
        raise ConnectionRefusedError("Connection refused")

    outcome = await CachedCheck(refuse)()
    assert outcome.report() == [{"status": "fail", "output": "Connection refused"}]
