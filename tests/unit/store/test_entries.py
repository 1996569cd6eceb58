"""The entries of a generation's Redis stream: what is written is what is read back."""

from __future__ import annotations

import pytest

from app.errors import Cancelled, UpstreamError, UpstreamTimeout
from app.store import entries


def test_a_batch_keeps_its_index_and_payloads() -> None:
    payloads = [b'{"text":"a\\nb"}', b'{"thinking":"hm"}', b'{"text":"c"}']
    written = entries.batch(7, payloads)
    assert written == {"i": b"7", "p": b'{"text":"a\\nb"}\n{"thinking":"hm"}\n{"text":"c"}'}
    read = entries.decode({k.encode(): v for k, v in written.items()})
    assert read == entries.Batch(7, payloads)


def test_the_end_of_a_finished_generation_carries_its_statistics() -> None:
    stats = {"done_reason": "stop", "eval_count": 2}
    written = entries.done(stats)
    assert entries.decode({b"done": written["done"]}) == entries.Done(stats)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(UpstreamTimeout("late"), id="timeout"),
        pytest.param(Cancelled("Stopped by a client."), id="cancelled"),
        pytest.param(UpstreamError("went away"), id="upstream"),
    ],
)
def test_the_end_of_a_failed_generation_is_the_error_again(error: UpstreamError) -> None:
    """An error crosses Redis as its code and detail and comes back as the same error."""
    read = entries.decode({b"error": entries.failed(error)["error"]})
    assert isinstance(read, entries.Failed)
    assert type(read.error) is type(error)
    assert (read.error.code, read.error.detail) == (error.code, error.detail)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({b"x": b"1"}, id="unknown"),
        pytest.param({b"p": b"{}"}, id="batch-without-index"),
        pytest.param({b"i": b"one", b"p": b"{}"}, id="index-not-a-number"),
        pytest.param({b"done": b"{nope"}, id="done-not-json"),
        pytest.param({b"error": b'{"error": "x"}'}, id="error-without-detail"),
    ],
)
def test_anything_else_is_not_an_entry(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="not a generation entry"):
        entries.decode(fields)
