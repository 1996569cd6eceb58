"""Prometheus metrics in-process: full garbage collections timed, others not; every label value
known in advance exported from the start."""

from __future__ import annotations

import asyncio
import gc

import pytest

from app.ops import metrics
from tests.support.in_process import InProcess

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


async def test_every_known_label_value_is_exported_as_zero_from_the_start(app: InProcess) -> None:
    """A labelled counter exports nothing until its first increment, so an alert on a refusal
    read "no data" until the first one: every value known in advance is there, at 0."""
    async with app.client() as http:
        scraped = (await http.get("/metrics")).text
    for metric, label, values in metrics.KNOWN:
        (family,) = metric.collect()
        for value in values:  # at 0 in a fresh worker; another test here may have counted
            assert f'{family.name}_total{{{label}="{value}"}}' in scraped
    host = app.state["settings"].upstream_urls[0]
    assert f'bib_ollama_host_errors_total{{host="{host}"}}' in scraped
