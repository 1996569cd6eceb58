"""The Redis keys: each group that one script or pipeline touches shares one slot."""

from __future__ import annotations

from redis.crc import key_slot

from app.generations.generation import new_generation_id
from app.store import keys


def test_each_group_of_keys_shares_one_slot() -> None:
    """A script or pipeline touches one group only, so it runs on a Redis Cluster unchanged."""
    generation, content = new_generation_id(), "ab" * 32
    groups = [
        [keys.generation(generation, n) for n in ("meta", "events", "lease", "watchers")],
        [keys.content(content, "cache"), keys.content(content, "live")],
        [keys.host_in_flight("http://a:1"), keys.host_in_flight("http://b:2")],
        [keys.rate_window("203.0.113.7", 5), keys.rate_window("203.0.113.7", 4)],
    ]
    for group in groups:
        assert len({key_slot(key.encode()) for key in group}) == 1, group
