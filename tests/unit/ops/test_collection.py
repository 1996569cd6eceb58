"""``app.ops.collection``: the worker's collector as it serves, and as it was after."""

from __future__ import annotations

import gc

from app.ops import collection


def test_tune_freezes_startup_and_sizes_the_young_generation_then_undoes_it() -> None:
    before = gc.get_threshold()
    undo = collection.tune()
    try:
        assert gc.get_threshold() == (collection.YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        undo()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
