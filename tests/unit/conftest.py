"""Fixtures of the unit tree: Redis clients as a worker connects them, and the app in-process
(``tests.support.in_process``) with the suite's settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.store.client import RedisClient, connect
from app.store.generations import RedisStore
from tests.support.in_process import InProcess, in_process
from tests.support.settings import SERVICE_ENV


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of the suite's Redis, as a worker connects one."""
    client = await connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    """The service's Redis store on the suite's Redis, as a worker builds it."""
    quick, blocking = await connect(redis_url), await connect(redis_url)
    yield RedisStore(quick, blocking)
    await quick.aclose()
    await blocking.aclose()


@pytest.fixture
def app_env(redis_url: str) -> dict[str, str]:
    """The suite's settings for an in-process app (``tests.support.in_process``)."""
    return {**SERVICE_ENV, "REDIS_URL": redis_url}


@pytest.fixture
async def app(app_env: dict[str, str]) -> AsyncIterator[InProcess]:
    """The app in-process with the suite's settings."""
    async with in_process(app_env) as running:
        yield running
