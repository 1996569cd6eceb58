"""Fixtures both trees share: a real Valkey, emptied before each test that uses it.

A test that uses Redis runs on one Valkey; where Redis semantics are under test (the store, the
limiter, joining, resume, hosts), its module is marked ``cluster`` and it runs on a three-node
Valkey cluster too. ``unit/conftest.py`` holds the in-process app and Redis clients;
``system/conftest.py`` the simulator and app processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import servers


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client runs on asyncio only


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" in metafunc.fixturenames:
        cluster = metafunc.definition.get_closest_marker("cluster") is not None
        flavours = ["single", "cluster"] if cluster else ["single"]
        metafunc.parametrize("redis_url", flavours, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """One Valkey, or a three-node Valkey cluster (see the module docstring)."""
    if request.param == "single":
        server = servers.valkey().start(ready_path=None)
        yield f"redis://127.0.0.1:{server.port}/0"
        server.stop()
    else:
        cluster = servers.ValkeyCluster().start()
        yield cluster.url
        cluster.stop()


@pytest.fixture(autouse=True)
def _flush_redis(request: pytest.FixtureRequest) -> None:
    """Each test that uses Redis starts from an empty one: no entries or counts of earlier tests."""
    if "redis_url" in request.fixturenames:
        with servers.redis_client(request.getfixturevalue("redis_url")) as client:
            client.flushall()
