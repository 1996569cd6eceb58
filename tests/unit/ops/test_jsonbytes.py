"""``app.ops.jsonbytes``: JSON kept by the service holds no more memory than its length."""

from __future__ import annotations

import tracemalloc

import orjson

from app.ops import jsonbytes


def test_a_thousand_small_payloads_hold_about_their_size() -> None:
    values = [{"text": f"hi {i}"} for i in range(1000)]
    tracemalloc.start()
    try:
        kept = [jsonbytes.dumps(value) for value in values]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert [orjson.loads(payload) for payload in kept] == values
    assert held < 100 * 1024  # orjson's own outputs: some 4 MiB (see the module docstring)
