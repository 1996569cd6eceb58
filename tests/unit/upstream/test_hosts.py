"""A host's state on its own: cool-downs that double up to a cap, and model names."""

from __future__ import annotations

import time

import pytest

from app.upstream.hosts import Host, Timings, model_key


@pytest.mark.parametrize(
    ("name", "key"),
    [("llama3.2", "llama3.2:latest"), ("llama3.2:1b", "llama3.2:1b"),
     ("registry.local:5000/team/model", "registry.local:5000/team/model:latest")],
)  # fmt: skip
def test_a_model_without_a_tag_is_latest(name: str, key: str) -> None:
    assert model_key(name) == key


def test_cool_downs_double_up_to_the_cap_and_a_success_after_the_probe_resets_them() -> None:
    host = Host("http://ollama.invalid", client=None)  # type: ignore[arg-type]  # not called
    timings = Timings(refresh_seconds=5, eject_seconds=1, eject_max_seconds=5)
    cool_downs = []
    for _ in range(5):
        before = time.monotonic()
        host.failed("refused", timings, eject=True)
        cool_downs.append(round(host.ejected_until - before))
    assert cool_downs == [1, 2, 4, 5, 5]
    host.served()  # a generation that began before: the host stays out, the doubling stays
    assert host.ejected
    host.listed([])  # the probe after the cool-down
    host.served()
    host.failed("refused", timings, eject=True)
    assert (host.ejected, round(host.ejected_until - time.monotonic())) == (True, 1)
    host.failed("a 400", timings, eject=False)
    assert (host.errors, host.last_error) == (7, "a 400")


def test_a_host_that_fails_thousands_of_times_in_a_row_stays_at_the_cap() -> None:
    """Issue 12: 5,000 generations dropped at once made ``Host.failed`` raise ``OverflowError``
    after about 1,025 ejections in a row (``2 ** n`` no longer fit a float), so their clients
    got "failed inside the service" with a traceback instead of ``upstream_error``."""
    host = Host("http://ollama.invalid", client=None)  # type: ignore[arg-type]  # not called
    timings = Timings(refresh_seconds=5.0, eject_seconds=1.0, eject_max_seconds=30.0)  # as parsed
    for _ in range(5000):
        before = time.monotonic()
        host.failed("dropped", timings, eject=True)
    assert host.ejections == 5000
    assert round(host.ejected_until - before) == 30
