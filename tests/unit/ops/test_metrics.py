"""Prometheus metrics in-process: full garbage collections timed, others not."""

from __future__ import annotations

import asyncio
import gc

import pytest

from app.ops import metrics

pytestmark = pytest.mark.anyio


async def test_full_garbage_collections_are_timed() -> None:
    def timed() -> float:
        (family,) = metrics.FULL_COLLECTIONS.collect()
        return next(s.value for s in family.samples if s.name.endswith("_count"))

    before = timed()
    untime = metrics.time_full_collections(asyncio.get_running_loop())
    try:
        gc.collect()
        gc.collect(1)  # not a full one
        await asyncio.sleep(0)  # recorded from the loop, after the collection
    finally:
        untime()
    gc.collect()
    await asyncio.sleep(0)
    assert timed() == before + 1
