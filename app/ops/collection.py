"""How a worker's garbage collector runs: with thousands of open streams a full collection
walks every object of every stream while the worker stands still, so it should run rarely.

CPython collects the oldest generation once a quarter more objects than it held have been
promoted into it, and at its defaults (a young collection every 700 allocations) the objects
of tokens in flight (futures, timeouts, frames) are promoted in their thousands although they
die a moment later. Measured with 5,000 generations relaying on one worker: two full
collections in 20 s, each stopping the worker for about a second (``/livez`` 823 and 1,311 ms).
So young collections run every ``YOUNG_THRESHOLD`` allocations, which lets such objects die
young, and what startup built is frozen out of every collection (``gc.freeze``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable

YOUNG_THRESHOLD = 50_000


def tune() -> Callable[[], None]:
    """Sets this process's collector for serving; returns the undo."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *thresholds[1:])

    def undo() -> None:
        gc.set_threshold(*thresholds)
        gc.unfreeze()

    return undo
